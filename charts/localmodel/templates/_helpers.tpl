{{/* Names, labels and shared pod pieces of the localmodel chart. */}}

{{- define "localmodel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-localmodel, or <release> when it already names the chart; 50 characters leave room for suffixes. */}}
{{- define "localmodel.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "localmodel.operatorName" -}}
{{- include "localmodel.fullname" . }}-operator
{{- end }}

{{- define "localmodel.routerName" -}}
{{- include "localmodel.fullname" . }}-router
{{- end }}

{{- define "localmodel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: localmodel
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "router"). */}}
{{- define "localmodel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "localmodel.name" .ctx }}-{{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "localmodel.componentLabels" -}}
{{ include "localmodel.labels" .ctx }}
{{ include "localmodel.selectorLabels" . }}
{{- end }}

{{/* repository:tag, or repository@digest: include with (dict "image" .Values.images.server "ctx" $). */}}
{{- define "localmodel.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The CUDA variant of the server image, for GPU server pods. */}}
{{- define "localmodel.gpuImage" -}}
{{- $server := .Values.images.server }}
{{- $repository := default $server.repository .Values.gpu.image.repository }}
{{- $tag := default (printf "%s-cuda" (default .Chart.AppVersion $server.tag)) .Values.gpu.image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* In-cluster base URL of the router (without /v1); the operator reports <it>/v1 as each model's endpoint. */}}
{{- define "localmodel.routerURL" -}}
{{- $host := printf "%s.%s.svc" (include "localmodel.routerName" .) .Release.Namespace }}
{{- if eq (int .Values.router.service.port) 80 }}
{{- printf "http://%s" $host }}
{{- else }}
{{- printf "http://%s:%d" $host (int .Values.router.service.port) }}
{{- end }}
{{- end }}

{{/* Whether the router checks API keys, and the Secret that holds them. */}}
{{- define "localmodel.apiKeysSecret" -}}
{{- if .Values.router.apiKeys.existingSecret }}
{{- .Values.router.apiKeys.existingSecret }}
{{- else if .Values.router.apiKeys.keys }}
{{- include "localmodel.routerName" . }}-api-keys
{{- end }}
{{- end }}

{{- define "localmodel.apiKeysSecretKey" -}}
{{- if .Values.router.apiKeys.existingSecret }}
{{- .Values.router.apiKeys.existingSecretKey }}
{{- else }}
{{- "api-keys" }}
{{- end }}
{{- end }}

{{/*
RBAC rules from a file in files/, owned by the component's code (never copied
here): include with (dict "ctx" $ "file" "operator-rbac-rules.yaml").
*/}}
{{- define "localmodel.rules" -}}
{{- $text := .ctx.Files.Get (printf "files/%s" .file) }}
{{- if not $text }}
{{- fail (printf "charts/localmodel/files/%s is missing or empty: the chart takes its RBAC rules from it" .file) }}
{{- end }}
{{- $rules := fromYamlArray $text }}
{{- if and (eq (len $rules) 1) (kindIs "string" (first $rules)) }}
{{- fail (printf "files/%s is not a YAML list of PolicyRules: %s" .file (first $rules)) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/* The hardened security contexts every workload of the chart runs with. */}}
{{- define "localmodel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "localmodel.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling fields shared by the operator and router pods: include with a component's values. */}}
{{- define "localmodel.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Checks across values that a JSON schema cannot express with a readable message. */}}
{{- define "localmodel.validate" -}}
{{- if and .Values.networkPolicy.enabled (not .Values.watchNamespaces) }}
{{- fail "networkPolicy.enabled needs watchNamespaces: the chart writes a policy into each namespace whose model servers it protects, and with all namespaces watched it cannot know them" }}
{{- end }}
{{- if and .Values.router.ingress.enabled (not .Values.router.enabled) }}
{{- fail "router.ingress.enabled needs router.enabled: the Ingress points at the router's Service" }}
{{- end }}
{{- end }}
