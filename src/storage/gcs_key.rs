//! A GCS service-account key checked before object_store parses it.
//!
//! object_store's errors for a malformed key quote the key: a private key whose lines were
//! joined came back as `missing section end marker: [80, 82, 73, …]`, the whole key body as
//! bytes. kbackup checks the shape itself first, so the refusal names the source and the problem
//! and never holds a byte of the key.

use base64::Engine;

/// Where a key came from (a config key or an environment variable) and what it holds.
pub(super) enum KeySource {
    /// The JSON itself.
    Inline { source: &'static str, json: String },
    /// A file holding the JSON.
    File { source: &'static str, path: String },
}

/// The key the GCS store would use, if any: the config's, else the environment's (as
/// object_store reads it). `None` when nothing names a service-account key.
pub(super) fn source(key: Option<&str>, path: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<KeySource> {
    if let Some(k) = key {
        return Some(KeySource::Inline { source: "storage.service_account_key", json: k.to_string() });
    }
    if let Some(p) = path {
        return Some(KeySource::File { source: "storage.service_account_path", path: p.to_string() });
    }
    if let Some(k) = env("GOOGLE_SERVICE_ACCOUNT_KEY") {
        return Some(KeySource::Inline { source: "GOOGLE_SERVICE_ACCOUNT_KEY", json: k });
    }
    for var in ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_APPLICATION_CREDENTIALS"] {
        if let Some(p) = env(var) {
            return Some(KeySource::File { source: var, path: p });
        }
    }
    None
}

/// Checks a key's shape; the error names the source and the fault, never the key's content.
pub(super) fn check(key: &KeySource) -> Result<(), String> {
    let (source, json) = match key {
        KeySource::Inline { source, json } => (*source, json.clone()),
        KeySource::File { source, path } => {
            let json = std::fs::read_to_string(path).map_err(|e| format!("{source}: cannot read the key file {path}: {e}"))?;
            (*source, json)
        }
    };
    check_json(&json).map_err(|fault| format!("{source}: the GCS service-account key {fault}"))
}

fn check_json(json: &str) -> Result<(), String> {
    // serde_json's messages give a line and column, never the text around them.
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("is not valid JSON ({e})"))?;
    let obj = value.as_object().ok_or("is not a JSON object")?;
    // Application default credentials of a user (`authorized_user`) hold no private key.
    if obj.get("type").and_then(|t| t.as_str()).is_some_and(|t| t != "service_account") {
        return Ok(());
    }
    // object_store's switch for emulators: no key is used.
    if obj.get("disable_oauth").and_then(|d| d.as_bool()) == Some(true) {
        return Ok(());
    }
    if obj.get("client_email").and_then(|v| v.as_str()).is_none_or(str::is_empty) {
        return Err("has no client_email".into());
    }
    // object_store reads it, and refuses a key without it.
    if obj.get("private_key_id").and_then(|v| v.as_str()).is_none() {
        return Err("has no private_key_id".into());
    }
    let pem = match obj.get("private_key") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(serde_json::Value::String(_)) => return Err("has an empty private_key".into()),
        Some(_) => return Err("has a private_key that is not a string".into()),
        None => return Err("has no private_key".into()),
    };
    check_pem(pem).map_err(|fault| format!("private_key {fault}"))
}

/// The PEM labels object_store takes: PKCS#8 and PKCS#1 RSA keys.
const LABELS: [&str; 2] = ["PRIVATE KEY", "RSA PRIVATE KEY"];

fn check_pem(pem: &str) -> Result<(), String> {
    let pem = pem.trim();
    let Some(label) = LABELS.iter().rev().find(|l| pem.starts_with(&format!("-----BEGIN {l}-----"))) else {
        return Err("does not start with -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY)".into());
    };
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let rest = &pem[begin.len()..];
    let Some(at) = rest.find(&end) else {
        return Err(format!("is cut short: no {end} line"));
    };
    if !(rest.starts_with('\n') || rest.starts_with("\r\n")) || !rest[..at].ends_with('\n') {
        return Err(format!("has its lines joined into one: PEM needs a line break after {begin} and before {end} (in JSON, \\n)"));
    }
    let body: String = rest[..at].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if body.is_empty() {
        return Err("has nothing between its BEGIN and END lines".into());
    }
    base64::engine::general_purpose::STANDARD.decode(&body).map_err(|_| "has a body that is not base64".to_string())?;
    Ok(())
}

/// Removes what could be key material from a message of a library's: byte lists (`[80, 82, …]`)
/// and long base64 runs. A backstop behind [`check`]; the secrets kbackup knows are removed by
/// name before this.
pub(super) fn scrub_key_material(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while !rest.is_empty() {
        if let Some(n) = byte_list_len(rest) {
            out.push_str("[bytes left out]");
            rest = &rest[n..];
            continue;
        }
        let run = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')).count();
        if run >= 48 {
            out.push_str("<left out>");
            rest = &rest[run..];
            continue;
        }
        let step = if run > 0 { run } else { rest.chars().next().map_or(1, char::len_utf8) };
        out.push_str(&rest[..step]);
        rest = &rest[step..];
    }
    out
}

/// The length of a list of at least 8 numbers at the start of `s`, as `{:?}` prints bytes.
fn byte_list_len(s: &str) -> Option<usize> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let parts: Vec<&str> = inner[..close].split(", ").collect();
    (parts.len() >= 8 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))).then_some(close + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\nYx2eqzDV+xeG8kx/sQFV18S5JhzGeIJNA72wSeukEPojtqUyX2J0CciPBh7eqclQ\n-----END PRIVATE KEY-----\n";

    fn key(pem: &str) -> String {
        serde_json::json!({"type": "service_account", "client_email": "a@b.c", "private_key_id": "1", "private_key": pem}).to_string()
    }

    fn inline(json: String) -> KeySource {
        KeySource::Inline { source: "storage.service_account_key", json }
    }

    #[test]
    fn a_well_formed_key_passes() {
        assert_eq!(check(&inline(key(PEM))), Ok(()));
        assert_eq!(check(&inline(key(&PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY")))), Ok(()));
        assert_eq!(check(&inline(key(&PEM.replace('\n', "\r\n")))), Ok(()));
        // The emulator's key and a user's application default credentials hold no key.
        assert_eq!(check(&inline(r#"{"disable_oauth":true,"client_email":"x","private_key":""}"#.into())), Ok(()));
        assert_eq!(check(&inline(r#"{"type":"authorized_user","refresh_token":"r"}"#.into())), Ok(()));
    }

    #[test]
    fn every_fault_is_named_without_the_key() {
        let body_piece = "MIIBVQIBADANBgkq";
        let cases = [
            (key(&PEM.replace('\n', "")), "lines joined"),
            (key(&PEM[..PEM.len() / 2]), "cut short"),
            (key(&PEM.replace("Yx2eqzDV", "!!!!!!!!")), "not base64"),
            (key(&PEM.replace("-----BEGIN PRIVATE KEY-----\n", "")), "does not start"),
            (key(""), "empty private_key"),
            (key(&format!("-----BEGIN PRIVATE KEY-----\n{}", "\n-----END PRIVATE KEY-----")), "nothing between"),
            (key(PEM)[..120].to_string(), "not valid JSON"),
            (r#"{"type":"service_account","private_key":"x"}"#.to_string(), "no client_email"),
            (r#"{"type":"service_account","client_email":"a","private_key_id":"1"}"#.to_string(), "no private_key"),
            (r#"{"type":"service_account","client_email":"a","private_key":"x"}"#.to_string(), "no private_key_id"),
            (r#"["x"]"#.to_string(), "not a JSON object"),
        ];
        for (json, fault) in cases {
            let err = check(&inline(json.clone())).unwrap_err();
            assert!(err.starts_with("storage.service_account_key: the GCS service-account key "), "{err}");
            assert!(err.contains(fault), "{fault}: {err}");
            assert!(!err.contains(body_piece), "{err}");
        }
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = check(&KeySource::File { source: "GOOGLE_SERVICE_ACCOUNT", path: "/nonexistent/k.json".into() }).unwrap_err();
        assert!(err.starts_with("GOOGLE_SERVICE_ACCOUNT: cannot read the key file /nonexistent/k.json"), "{err}");
    }

    #[test]
    fn the_config_wins_over_the_environment() {
        let env = |k: &str| (k == "GOOGLE_SERVICE_ACCOUNT_KEY").then(|| "{}".to_string());
        assert!(matches!(source(Some("k"), None, env), Some(KeySource::Inline { source: "storage.service_account_key", .. })));
        assert!(matches!(source(None, Some("p"), env), Some(KeySource::File { source: "storage.service_account_path", .. })));
        assert!(matches!(source(None, None, env), Some(KeySource::Inline { source: "GOOGLE_SERVICE_ACCOUNT_KEY", .. })));
        assert!(source(None, None, |_| None).is_none());
    }

    #[test]
    fn key_material_is_scrubbed_from_library_messages() {
        let msg = "Error reading pem file: missing section end marker: [80, 82, 73, 86, 65, 84, 69, 32, 75]; rest";
        assert_eq!(scrub_key_material(msg), "Error reading pem file: missing section end marker: [bytes left out]; rest");
        let b64 = "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3";
        assert_eq!(scrub_key_material(&format!("bad key {b64} here")), "bad key <left out> here");
        // Paths, URLs and short lists stay.
        let keep = "GET http://127.0.0.1:4473/storage/v1/b/bucket/o?prefix=unique%2Fraw%2F failed: [1, 2] é";
        assert_eq!(scrub_key_material(keep), keep);
    }
}
