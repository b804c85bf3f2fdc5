{{/*
The operator's permissions, in three groups. Every verb here is used by the
operator (docs/operator.md lists why); there are no wildcards. tests/test_chart.py
and e2e/test_helm.py check both properties.
*/}}

{{/* Cluster-scoped: CRD discovery (kopf scans the served resources), namespaces (namespaced mode). */}}
{{- define "sentient-operator.rules.cluster" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not (include "sentient-operator.clusterWide" .) }}
# Serving a list of namespaces, kopf lists and watches namespaces to notice
# them appear and go (without this it retries for a minute at start, then
# assumes they exist). Serving the whole cluster it does not need them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* Per watched namespace (or cluster-wide): the custom resources and their children. */}}
{{- define "sentient-operator.rules.namespaced" -}}
# The custom resources: watched (kopf indexes and event handlers, no finalizers,
# nothing written to the objects themselves) and their status patched.
- apiGroups: ["sentient.dev"]
  resources: ["sentientagents", "llmproviders", "ratelimitpolicies"]
  verbs: ["list", "watch"]
- apiGroups: ["sentient.dev"]
  resources: ["sentientagents/status", "llmproviders/status", "ratelimitpolicies/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion: true; where the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift) that
# needs update on the owner's finalizers subresource. Nothing else touches finalizers.
- apiGroups: ["sentient.dev"]
  resources: ["sentientagents/finalizers", "llmproviders/finalizers"]
  verbs: ["update"]
# Children and references: watched; written by server-side apply (patch, and
# create for a new object). Secrets are also read directly (credential sources).
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch"]
# Optional children are also deleted when the agent stops wanting them.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# kopf and the operator post core/v1 Events about handled objects (kopf
# never uses events.k8s.io).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The release namespace: leader election and the fingerprint key, by name where RBAC allows. */}}
{{- define "sentient-operator.rules.self" -}}
{{- if .Values.leaderElection.enabled }}
# sentient_operator.leader: read, create, then renew (PUT) the Lease.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "sentient-operator.fullname" . | quote }}]
  verbs: ["get", "update"]
{{- end }}
# The keyed-HMAC key of credential fingerprints, created on first start and
# kept across reinstalls so that fingerprints (and pods) stay stable.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["sentient-operator-fingerprint-key"]
  verbs: ["get"]
# Vault / OpenBao kubernetes auth outside a pod or with a custom audience: a
# short-lived token (TokenRequest) of the operator's own service account only.
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  resourceNames: [{{ include "sentient-operator.serviceAccountName" . | quote }}]
  verbs: ["create"]
{{- end }}
