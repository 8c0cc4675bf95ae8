{{/* The full name: the release's when it contains the chart's, else "<release>-<chart>". */}}
{{- define "dermaga.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dermaga.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "dermaga.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dermaga.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "dermaga.labels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The gateway pods' selector. */}}
{{- define "dermaga.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "dermaga.image" -}}
{{- $i := .Values.dermaga.image -}}
{{- if $i.digest -}}
{{- printf "%s/%s@%s" $i.registry $i.image $i.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $i.registry $i.image (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The Service ports of one map: each entry key that is a port or a range (keys with a "." are
per-port options), every port of a range; named "<prefix>-<port>-<proto>" or "<proto>-<port>".
Call with (dict "map" .Values.tcp "protocol" "TCP" "prefix" .Values.portNamePrefix).
*/}}
{{- define "dermaga.servicePorts" -}}
{{- $protocol := .protocol -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .map }}
{{- if not (contains "." (toString $key)) }}
{{- $bounds := splitList "-" (toString $key) }}
{{- $first := atoi (first $bounds) }}
{{- $last := atoi (last $bounds) }}
{{- range $port := untilStep $first (add1 $last | int) 1 }}
{{- $proto := lower $protocol }}
- name: {{ if $prefix }}{{ printf "%s-%d-%s" $prefix $port $proto }}{{ else }}{{ printf "%s-%d" $proto $port }}{{ end }}
  protocol: {{ $protocol }}
  port: {{ $port }}
  targetPort: {{ $port }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A port map value as text: a whole number written without quotes in a values file (Helm reads it
as a float: 1000000 would print as 1e+06) as the integer it is.
*/}}
{{- define "dermaga.mapValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
