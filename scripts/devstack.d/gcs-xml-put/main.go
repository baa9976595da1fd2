// Command gcs-xml-put sits in front of fake-gcs-server in the dev stack.
//
// fake-gcs-server serves GCS's JSON API and most of its XML API, but not the XML API's plain
// object upload (PUT /<bucket>/<object>), which object_store's GCS client (and so kbackup)
// uses for every write. This adapter turns exactly that request into the JSON API's media
// upload, carrying the create-only precondition over (x-goog-if-generation-match becomes
// ifGenerationMatch, so a second create is refused with 412 as GCS refuses it), and answers
// with the headers the XML API returns (ETag, x-goog-generation). Every other request — reads,
// lists, deletes, the JSON API — passes through unchanged.
//
// Standard library only: scripts/devstack builds it with `go build`, no module download.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4473", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:4474", "fake-gcs-server's address")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatalf("bad -upstream: %v", err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	// Keep the client's Host header: fake-gcs-server matches it against its public host.
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		host := r.Host
		director(r)
		r.Host = host
	}
	client := &http.Client{}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.EscapedPath(), "/")
		isObjectPut := r.Method == http.MethodPut && r.URL.RawQuery == "" && r.Header.Get("x-goog-copy-source") == "" && strings.Contains(path, "/")
		if !isObjectPut {
			proxy.ServeHTTP(w, r)
			return
		}
		parts := strings.SplitN(path, "/", 2)
		bucket, errB := url.PathUnescape(parts[0])
		object, errO := url.PathUnescape(parts[1])
		if errB != nil || errO != nil {
			http.Error(w, "bad object path", http.StatusBadRequest)
			return
		}
		q := url.Values{"uploadType": {"media"}, "name": {object}}
		if g := r.Header.Get("x-goog-if-generation-match"); g != "" {
			q.Set("ifGenerationMatch", g)
		}
		up, err := http.NewRequest(http.MethodPost, *upstream+"/upload/storage/v1/b/"+url.PathEscape(bucket)+"/o?"+q.Encode(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		up.Host = r.Host
		up.ContentLength = r.ContentLength
		contentType := r.Header.Get("Content-Type")
		if contentType == "" {
			contentType = "application/octet-stream"
		}
		up.Header.Set("Content-Type", contentType)
		resp, err := client.Do(up)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if resp.StatusCode != http.StatusOK {
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(body)
			return
		}
		var meta struct {
			Etag       string `json:"etag"`
			Generation string `json:"generation"`
		}
		if err := json.Unmarshal(body, &meta); err != nil {
			http.Error(w, "upstream answered without object metadata", http.StatusBadGateway)
			return
		}
		w.Header().Set("ETag", "\""+meta.Etag+"\"")
		w.Header().Set("x-goog-generation", meta.Generation)
		w.WriteHeader(http.StatusOK)
	})
	log.Printf("gcs-xml-put: serving %s, upstream %s", *listen, *upstream)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
