{{/*
Chart name, truncated to 63 characters.
*/}}
{{- define "eft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name + chart name (the release name alone when it already holds the chart name),
truncated to 63 characters (leaving room for the "-trainer" suffix is the caller's job).
*/}}
{{- define "eft.fullname" -}}
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

{{/*
Chart label value: name-version.
*/}}
{{- define "eft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "eft.labels" -}}
helm.sh/chart: {{ include "eft.chart" . }}
{{ include "eft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: embedding-finetune-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the operator pods.
*/}}
{{- define "eft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "eft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The trainer ServiceAccount name passed to the operator; empty means each namespace's default
ServiceAccount (trainer pods mount no token either way).
*/}}
{{- define "eft.trainerServiceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create }}
{{- if include "eft.trainerNamespaces" . }}
{{- default (printf "%s-trainer" (include "eft.fullname" . | trunc 55 | trimSuffix "-")) .Values.trainer.serviceAccount.name }}
{{- end }}
{{- else }}
{{- .Values.trainer.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Namespaces where trainer pods run and where the chart creates trainer objects (ServiceAccount,
NetworkPolicy), comma-separated: watchNamespaces in namespaced scope, trainerNamespaces in cluster scope.
*/}}
{{- define "eft.trainerNamespaces" -}}
{{- if eq .Values.rbac.scope "namespaced" }}
{{- join "," .Values.watchNamespaces }}
{{- else }}
{{- join "," .Values.trainerNamespaces }}
{{- end }}
{{- end }}

{{/*
Image reference: registry/repository, then @digest when set, else :tag (default: appVersion).
Usage: include "eft.image" (dict "image" .Values.image "context" .)
*/}}
{{- define "eft.image" -}}
{{- $img := .image }}
{{- $repo := $img.repository }}
{{- if $img.registry }}
{{- $repo = printf "%s/%s" $img.registry $img.repository }}
{{- end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .context.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/*
The trainer image prefixes resources may use, as a list: trainer.allowedImages, else the default trainer
repository (registry/repository). The default trainer image itself is always allowed.
*/}}
{{- define "eft.allowedImages" -}}
{{- $img := .Values.trainer.image }}
{{- $repo := $img.repository }}
{{- if $img.registry }}
{{- $repo = printf "%s/%s" $img.registry $img.repository }}
{{- end }}
{{- toJson (default (list $repo) .Values.trainer.allowedImages) }}
{{- end }}

{{/*
"true" when kopf peering is on (more than one replica, or forced).
*/}}
{{- define "eft.peeringEnabled" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
The kopf peering object's name.
*/}}
{{- define "eft.peeringName" -}}
{{- default (include "eft.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
Refuse inconsistent values with a message naming the key (the schema checks types; this checks sense).
*/}}
{{- define "eft.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (not .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: list the namespaces the operator watches" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "cluster") .Values.watchNamespaces }}
{{- fail "watchNamespaces is set but rbac.scope=cluster: set rbac.scope=namespaced to watch only those namespaces, or empty watchNamespaces to watch the cluster" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.s3.cidrs) }}
{{- fail "networkPolicy.enabled needs networkPolicy.s3.cidrs: the CIDRs of your S3 endpoint (trainer pods can reach nothing else)" }}
{{- end }}
{{- range concat .Values.networkPolicy.s3.cidrs .Values.networkPolicy.llm.cidrs }}
{{- if hasPrefix "169.254." . }}
{{- fail (printf "networkPolicy: %s is link-local (the node's metadata service, 169.254.169.254, holds cloud credentials): trainer pods never reach it" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Annotations of the CRDs the chart renders.
*/}}
{{- define "eft.crdAnnotations" -}}
{{- if .Values.crds.keep }}
annotations:
  helm.sh/resource-policy: keep
{{- end }}
{{- end }}

{{/*
RBAC rules on the namespaced resources the operator touches (in a ClusterRole in cluster scope, in a
Role per watched namespace in namespaced scope). Least privilege: no wildcards, no verb on Secrets (Jobs
reference the credentials Secret by name; the operator never reads it).
*/}}
{{- define "eft.namespacedRules" -}}
- apiGroups: ["finetune.eft.dev"]
  resources: ["embeddingfinetunes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["finetune.eft.dev"]
  resources: ["embeddingfinetunes/status"]
  verbs: ["get", "patch", "update"]
# Children carry blockOwnerDeletion: where OwnerReferencesPermissionEnforcement is on, that needs this.
- apiGroups: ["finetune.eft.dev"]
  resources: ["embeddingfinetunes/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# patch: the operator's finalizer leaves a run's pods once its outcome is recorded.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# list: the Job controller's FailedCreate Events say why a Job has no pods.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
RBAC rule on kopf's peering objects (kind per scope), when peering is on.
*/}}
{{- define "eft.peeringRule" -}}
{{- if include "eft.peeringEnabled" . }}
- apiGroups: ["kopf.dev"]
  resources: [{{ if eq .Values.rbac.scope "cluster" }}"clusterkopfpeerings"{{ else }}"kopfpeerings"{{ end }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
One policy key as a CEL expression for the namespace of the request: a map from each namespace that
overrides the key to its value, else the default (policy.namespaces overrides key by key).
Call with (dict "key" "buckets" "context" $).
*/}}
{{- define "eft.policyKey" -}}
{{- $p := .context.Values.policy }}
{{- $over := dict }}
{{- range $ns, $o := $p.namespaces }}
{{- if hasKey $o $.key }}{{ $_ := set $over $ns (index $o $.key) }}{{ end }}
{{- end }}
{{- if $over -}}
request.namespace in {{ toJson $over }} ? {{ toJson $over }}[request.namespace] : {{ toJson (index $p .key) }}
{{- else -}}
{{ toJson (index $p .key) }}
{{- end }}
{{- end }}

{{/*
CEL: the parts of the URL in string expression .u that endpoint entries are compared by (scheme, host
without case and one trailing dot, port with the scheme's default, path without a trailing /) and "bad"
(user-info, backslash, query, fragment, . or .. segments). eft_api.policy.parse_url does the same steps.
*/}}
{{- define "eft.celURL" -}}
cel.bind(s, {{ .u }}.indexOf('://') >= 0 ? {{ .u }}.substring(0, {{ .u }}.indexOf('://')).lowerAscii() : '',
cel.bind(r, {{ .u }}.indexOf('://') >= 0 ? {{ .u }}.substring({{ .u }}.indexOf('://') + 3) : {{ .u }},
cel.bind(a, r.indexOf('/') < 0 ? r : r.substring(0, r.indexOf('/')),
cel.bind(p, r.indexOf('/') < 0 ? '' : r.substring(r.indexOf('/')),
cel.bind(h, a.startsWith('[') ? a.substring(0, a.indexOf(']') + 1) : (a.contains(':') ? a.substring(0, a.indexOf(':')) : a),
cel.bind(o, a.startsWith('[') ? a.substring(a.indexOf(']') + 1) : (a.contains(':') ? a.substring(a.indexOf(':')) : ''),
{'scheme': s,
 'host': h.lowerAscii().endsWith('.') ? h.lowerAscii().substring(0, size(h) - 1) : h.lowerAscii(),
 'port': o == '' ? (s == 'https' ? '443' : '80') : o.substring(1),
 'path': p.endsWith('/') ? p.substring(0, size(p) - 1) : p,
 'bad': {{ .u }}.contains('@') || {{ .u }}.contains('\\') || {{ .u }}.contains('?') || {{ .u }}.contains('#')
   || (p + '/').contains('/../') || (p + '/').contains('/./') || p.lowerAscii().contains('%2e') ? 'bad' : ''}))))))
{{- end }}

{{/*
CEL: whether URL string .u is under one of the endpoint entries in list expression .entries.
*/}}
{{- define "eft.celURLAllowed" -}}
cel.bind(x, {{ include "eft.celURL" (dict "u" .u) }},
  x.bad == '' && {{ .entries }}.exists(ent, cel.bind(y, {{ include "eft.celURL" (dict "u" "ent") }},
    x.scheme == y.scheme && x.host == y.host && x.port == y.port && (x.path == y.path || x.path.startsWith(y.path + '/')))))
{{- end }}
