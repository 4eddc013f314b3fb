{{/* Name of the chart, overridable. */}}
{{- define "finetune-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "finetune-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "finetune-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "finetune-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "finetune-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finetune-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "finetune-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "finetune-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Peering is only meaningful with it enabled; one replica otherwise. */}}
{{- define "finetune-operator.replicas" -}}
{{- if and .Values.peering.enabled .Values.leaderElection.enabled }}
{{- fail "peering.enabled and leaderElection.enabled are both true: choose one way to run several replicas (set leaderElection.enabled=false to use kopf peering)" }}
{{- end }}
{{- if or .Values.leaderElection.enabled .Values.peering.enabled }}{{ .Values.replicaCount }}{{ else }}1{{ end }}
{{- end }}

{{/* The leader-election Lease's name. */}}
{{- define "finetune-operator.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "finetune-operator.fullname" .) }}
{{- end }}

{{/* The namespaces the operator watches, comma-separated: the listed ones, the release's own
namespace when none is listed, or "" (every namespace) when clusterWide is chosen. */}}
{{- define "finetune-operator.watchNamespaces" -}}
{{- if .Values.clusterWide }}{{ else }}{{ join "," (.Values.watchNamespaces | default (list .Release.Namespace)) }}{{ end }}
{{- end }}
