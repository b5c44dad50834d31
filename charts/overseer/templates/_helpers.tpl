{{/* Names: "overseer" for a release called overseer, else RELEASE-overseer (fullnameOverride wins). */}}
{{- define "overseer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "overseer.operatorName" -}}
{{- printf "%s-operator" (include "overseer.fullname" .) -}}
{{- end -}}

{{- define "overseer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "overseer.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "overseer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: overseer
{{- end -}}

{{/* Also in overseer.operatorLabels, which holds the instance label already. */}}
{{- define "overseer.selectorLabels" -}}
app.kubernetes.io/name: overseer-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "overseer.operatorLabels" -}}
{{ include "overseer.labels" . }}
app.kubernetes.io/name: overseer-operator
app.kubernetes.io/component: operator
{{- end -}}

{{/* The pods' labels: no helm.sh/chart or managed-by, which say how an install was made. */}}
{{- define "overseer.podLabels" -}}
{{ include "overseer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: overseer
app.kubernetes.io/component: operator
{{- end -}}

{{/* An image reference; the tag defaults to the chart's appVersion (the package version). */}}
{{- define "overseer.image" -}}
{{- $img := index . 0 -}}{{- $root := index . 1 -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* The namespaced mode's namespaces, else none (cluster mode). */}}
{{- define "overseer.namespacedMode" -}}
{{- if eq .Values.rbac.mode "namespaced" -}}true{{- end -}}
{{- end -}}

{{/*
What the operator may do, and nothing more: a ClusterRole in cluster mode, a Role in each
watched namespace in namespaced mode. It also holds every permission it grants to agents
(Kubernetes refuses to let it grant more than it has): that is why it may create Goals and
create events.k8s.io Events although it never does.
*/}}
{{- define "overseer.operatorRules" -}}
# The three kinds: listed and watched into the caches, status written by the operator.
- apiGroups: [overseer.dev]
  resources: [agents, capabilities, goals]
  verbs: [get, list, watch]
- apiGroups: [overseer.dev]
  resources: [agents/status, capabilities/status, goals/status]
  verbs: [get, patch]
- apiGroups: [overseer.dev]
  resources: [goals]
  verbs: [create]                      # only to grant it: agents create sub-goals
# One pod per goal attempt; deleted on cancel and timeout. Patched to claim a warm pod for a goal
# (its labels and owner, Agent spec.warmPool).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, create, patch, delete]
# A workspace claim per goal (Agent spec.workspace), owned by the goal: the garbage collector
# deletes it with the goal, so the operator never does.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, watch, create]
# An Agent's API key Secret is checked, never watched or listed. The knowledge-base login of a
# namespace (Secret overseer-knowledge, read by its goal pods) is created on first need and
# patched only when the operator had to give that login a new password; the Redis URL of goal
# pods (Secret overseer-redis) is applied once per namespace that has an Agent.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]                      # create cannot be limited to a name
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [overseer-knowledge, overseer-redis]
  verbs: [patch]
# Events on every transition.
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# What an Agent becomes.
- apiGroups: [""]
  resources: [serviceaccounts, resourcequotas]
  verbs: [get, create, patch, delete]
# An Agent's approved self-modifications (overseer-agent-NAME-modifications): watched (only
# those labelled as Overseer's), created on the first approval, patched to add one or mark one
# reverted. Its goal pods get `get` on theirs, which the operator must hold to grant.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
{{- end -}}

{{/* The model gateway: its name, labels (gateway.podLabels on its pods: the agents' NetworkPolicy selects them). */}}
{{- define "overseer.gatewayName" -}}
{{- printf "%s-gateway" (include "overseer.fullname" .) -}}
{{- end -}}

{{- define "overseer.gatewaySelectorLabels" -}}
app.kubernetes.io/name: overseer-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "overseer.gatewayLabels" -}}
{{ include "overseer.labels" . }}
app.kubernetes.io/name: overseer-gateway
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "overseer.gatewayPodLabels" -}}
{{ include "overseer.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: overseer
app.kubernetes.io/component: gateway
{{- range $k, $v := .Values.gateway.podLabels }}
{{- if ne $k "app.kubernetes.io/name" }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where goal pods reach the gateway: gateway.url, else the chart's own gateway Service. */}}
{{- define "overseer.gatewayURL" -}}
{{- if .Values.gateway.url -}}
{{- .Values.gateway.url -}}
{{- else if .Values.gateway.enabled -}}
{{- printf "http://%s.%s.svc:%v" (include "overseer.gatewayName" .) .Release.Namespace .Values.gateway.port -}}
{{- end -}}
{{- end -}}

{{/*
The API server's addresses as a JSON list: networkPolicy.apiServer.cidrs, else the `kubernetes`
Endpoints of namespace default as the install sees them, else any address (helm template cannot
look; the ports still narrow it).
*/}}
{{- define "overseer.apiServerCidrs" -}}
{{- $cidrs := .Values.networkPolicy.apiServer.cidrs -}}
{{- if not $cidrs -}}
{{- $ep := lookup "v1" "Endpoints" "default" "kubernetes" -}}
{{- range ($ep.subsets | default list) -}}
{{- range (.addresses | default list) -}}
{{- $cidrs = append $cidrs (printf "%s/32" .ip) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson ($cidrs | default (list "0.0.0.0/0")) -}}
{{- end -}}

{{/* The gateway's permissions (e2e/gateway-rbac.yaml is the tested set): cluster-scoped, then per namespace. */}}
{{- define "overseer.gatewayClusterRules" -}}
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
{{- end -}}

{{- define "overseer.gatewayNamespaceRules" -}}
- apiGroups: [""]
  resources: [pods, secrets]
  verbs: [get]
- apiGroups: [overseer.dev]
  resources: [goals, agents]
  verbs: [get]
- apiGroups: [overseer.dev]
  resources: [goals/status, agents/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
