{{/* Names, labels and shared snippets. Everything is namespaced under "sluice.". */}}

{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels for one component: include "sluice.selectorLabels" (list . "proxy") */}}
{{- define "sluice.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sluice.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "sluice.adminSecretName" -}}
{{- .Values.proxy.admin.existingSecret | default (printf "%s-admin-token" (include "sluice.fullname" .)) -}}
{{- end -}}

{{- define "sluice.clientKeysSecretName" -}}
{{- .Values.proxy.clientAuth.existingSecret | default (printf "%s-client-keys" (include "sluice.fullname" .)) -}}
{{- end -}}

{{/* Where to watch: the flags both components take. */}}
{{- define "sluice.scopeArgs" -}}
{{- if .Values.watchAllNamespaces }}
- --all-namespaces
{{- else }}
- --namespace={{ .Release.Namespace }}
{{- end }}
{{- end -}}

{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Role for watching namespace-scoped things, or ClusterRole with watchAllNamespaces. */}}
{{- define "sluice.roleKind" -}}
{{- if .Values.watchAllNamespaces }}ClusterRole{{ else }}Role{{ end -}}
{{- end -}}
