{{/*
Name of the chart, overridable.
*/}}
{{- define "sentient-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects, at most 63 characters (DNS label).
*/}}
{{- define "sentient-operator.fullname" -}}
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

{{- define "sentient-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels of every object.
*/}}
{{- define "sentient-operator.labels" -}}
helm.sh/chart: {{ include "sentient-operator.chart" . }}
{{ include "sentient-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sentient-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable across upgrades (a Deployment selector is immutable).
*/}}
{{- define "sentient-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sentient-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sentient-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sentient-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to the
chart's appVersion so that chart and images are released together.
*/}}
{{- define "sentient-operator.imageRef" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end }}

{{- define "sentient-operator.image" -}}
{{- include "sentient-operator.imageRef" (list .Values.image .) -}}
{{- end }}

{{- define "sentient-operator.runtimeImage" -}}
{{- include "sentient-operator.imageRef" (list .Values.runtimeImage .) -}}
{{- end }}

{{/*
Whether the cluster-wide mode is on: no watchNamespaces given.
*/}}
{{- define "sentient-operator.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Decide whether an optional prometheus-operator object is rendered.
Arguments: (list $mode $apiVersionKind $valueName $root). Prints "true" or
nothing; fails with a readable message in mode "always" when the API is absent.
*/}}
{{- define "sentient-operator.monitoringEnabled" -}}
{{- $mode := index . 0 -}}
{{- $gvk := index . 1 -}}
{{- $valueName := index . 2 -}}
{{- $root := index . 3 -}}
{{- $has := $root.Capabilities.APIVersions.Has $gvk -}}
{{- if eq $mode "always" -}}
{{- if not $has -}}
{{- fail (printf "\n\n%s.mode is \"always\" but the cluster does not serve %s.\nInstall the prometheus-operator CRDs first, set %s.mode=auto to skip it, or render offline with: helm template --api-versions %s" $valueName $gvk $valueName $gvk) -}}
{{- end -}}
true
{{- else if and (eq $mode "auto") $has -}}
true
{{- end -}}
{{- end }}

{{- define "sentient-operator.serviceMonitorEnabled" -}}
{{- include "sentient-operator.monitoringEnabled" (list .Values.serviceMonitor.mode "monitoring.coreos.com/v1/ServiceMonitor" "serviceMonitor" .) -}}
{{- end }}

{{- define "sentient-operator.prometheusRuleEnabled" -}}
{{- include "sentient-operator.monitoringEnabled" (list .Values.prometheusRule.mode "monitoring.coreos.com/v1/PrometheusRule" "prometheusRule" .) -}}
{{- end }}

{{/*
Cross-field checks a JSON Schema cannot express clearly.
*/}}
{{- define "sentient-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "\n\nreplicaCount > 1 needs leaderElection.enabled=true: two operators reconciling the same objects would fight." -}}
{{- end -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "\n\nserviceAccount.name is required when serviceAccount.create is false." -}}
{{- end -}}
{{- end }}

{{/*
Fails with a message that names the missing namespaces when operator.watchNamespaces lists a
namespace the cluster does not have: otherwise the install stops half-way on Helm's raw error
about a Role in a namespace that is not found. Only against a live cluster: `lookup` returns
nothing under `helm template` and --dry-run=client, and kube-system exists in every cluster, so
its absence means there is nothing to check against.
*/}}
{{- define "sentient-operator.checkWatchNamespaces" -}}
{{- if lookup "v1" "Namespace" "" "kube-system" -}}
{{- $missing := list -}}
{{- range $ns := .Values.operator.watchNamespaces -}}
{{- /* The release namespace is rendered before --create-namespace creates it. */ -}}
{{- if and (ne $ns $.Release.Namespace) (not (lookup "v1" "Namespace" "" $ns)) -}}{{- $missing = append $missing $ns -}}{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "\n\noperator.watchNamespaces names namespaces that do not exist: %s.\nCreate them first (kubectl create namespace %s), then install again." (join ", " $missing) (join " " $missing)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
