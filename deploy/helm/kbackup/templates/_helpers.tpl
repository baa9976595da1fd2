{{/* The release's name, as every object is called. */}}
{{- define "kbackup.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kbackup.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kbackup.labels" -}}
{{ include "kbackup.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kbackup.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
A value as TOML. Helm reads every YAML number as a float: whole numbers are written as
integers (kbackup's keys are integers), strings and lists as JSON (valid TOML for these), maps
as inline tables with quoted keys.
*/}}
{{- define "kbackup.tomlValue" -}}
{{- $v := . -}}
{{- if and (kindIs "float64" $v) (or (gt $v 9007199254740991.0) (lt $v -9007199254740991.0)) -}}
{{- fail (printf "a number in the config, %v, is too large to be exact: YAML numbers are floats to Helm (values.schema.json bounds them)" $v) -}}
{{- else if kindIs "float64" $v -}}{{ int64 $v }}
{{- else if or (kindIs "int64" $v) (kindIs "int" $v) (kindIs "bool" $v) -}}{{ $v }}
{{- else if kindIs "map" $v -}}{ {{- $first := true -}}
{{- range $k, $x := $v -}}{{- if not $first }}, {{ end -}}{{- $first = false -}}{{ toJson $k }} = {{ include "kbackup.tomlValue" $x }}{{- end -}} }
{{- else -}}{{ toJson $v }}
{{- end -}}
{{- end -}}

{{/*
librdkafka's properties as kbackup reads them: strings, whatever YAML made of them
(`session.timeout.ms: 30000` is a number to YAML, a string to librdkafka).
*/}}
{{- define "kbackup.tomlStrings" -}}
{ {{- $first := true -}}
{{- range $k, $x := . -}}{{- if not $first }}, {{ end -}}{{- $first = false -}}
{{ toJson $k }} = {{ if kindIs "float64" $x }}{{ int64 $x | toString | toJson }}{{ else }}{{ toString $x | toJson }}{{ end }}
{{- end -}} }
{{- end -}}

{{/* The config as TOML: a table per map, an array of tables per list (the topics). */}}
{{- define "kbackup.toml" -}}
# Rendered by the kbackup Helm chart from its values (release {{ .Release.Name }}).
{{- range $section, $body := .Values.config }}
{{- if kindIs "slice" $body }}
{{- range $body }}

[[{{ $section }}]]
{{- range $k, $v := . }}
{{ $k }} = {{ include "kbackup.tomlValue" $v }}
{{- end }}
{{- end }}
{{- else if $body }}

[{{ $section }}]
{{- range $k, $v := $body }}
{{- if and (eq $section "kafka") (eq $k "properties") (not (empty $v)) }}
{{ $k }} = {{ include "kbackup.tomlStrings" $v }}
{{- else if not (and (kindIs "map" $v) (empty $v)) }}
{{ $k }} = {{ include "kbackup.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Derived: a graceful stop is never cut short by Kubernetes. */}}
{{- define "kbackup.gracePeriod" -}}
{{- $stop := 120 -}}
{{- with .Values.config.writer }}{{ with .shutdown_timeout_secs }}{{ $stop = int64 . }}{{ end }}{{ end -}}
{{- add $stop 30 -}}
{{- end -}}

{{/* Derived: the memory budget plus the measured headroom, in MiB. */}}
{{- define "kbackup.memoryMi" -}}
{{- $budget := 268435456 -}}
{{- with .Values.config.writer }}{{ with .memory_limit_bytes }}{{ $budget = int64 . }}{{ end }}{{ end -}}
{{- add (div $budget 1048576) (int64 .Values.memoryHeadroomMi) -}}
{{- end -}}

{{/* The arguments naming the config, for run and the audit. */}}
{{- define "kbackup.configArgs" -}}
{{- if .Values.secorProperties.enabled -}}
{{- range .Values.secorProperties.order }} --secor-properties /config/{{ . }}{{ end -}}
{{- else -}}
--config /config/kbackup.toml
{{- end -}}
{{- end -}}
