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
"true" when kopf's (legacy) peering objects are asked for; replicas elect a leader by a Lease instead.
*/}}
{{- define "eft.peeringEnabled" -}}
{{- if .Values.peering.enabled }}true{{ end }}
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
# Verb by verb what the code uses (tests/operator/test_least_privilege.py fails on a verb no request used,
# unless its code path is listed there). watch/list: kopf's watches; get: a pass reads its resource and,
# after a 409, the child that holds the name; patch: status, the Job's suspend and the operator's finalizer,
# and on the resource itself kopf's progress record of a handler that must retry (an API outage).
- apiGroups: ["finetune.eft.dev"]
  resources: ["embeddingfinetunes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["finetune.eft.dev"]
  resources: ["embeddingfinetunes/status"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion: where OwnerReferencesPermissionEnforcement is on, that needs this.
- apiGroups: ["finetune.eft.dev"]
  resources: ["embeddingfinetunes/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The run config: created, read after a 409, deleted once its run is history. Never listed or watched.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "delete"]
# The headless Service of a multi-node run (owned: the garbage collector deletes it).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
# patch: the operator's finalizer leaves a run's pods once its outcome is recorded.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# list: the Job controller's FailedCreate Events say why a Job has no pods; create: kopf's and ours.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "create"]
{{- if and .Values.networkPolicy.enabled (include "eft.trainerNamespaces" .) }}
# The NetworkPolicy that lets the pods of one multi-node run reach each other (owned: GC deletes it).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create"]
{{- end }}
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
The Lease of leader election: its name (the full name) and the operator's EFT_LEADER_ELECTION / EFT_LEASE_*
variables. Refuses timings with which a leader could still act after a standby took over.
*/}}
{{- define "eft.leaseName" -}}
{{- include "eft.fullname" . }}
{{- end }}

{{- define "eft.leaderElectionEnv" -}}
{{- $le := .Values.leaderElection }}
{{- if not (and (gt (float64 $le.leaseDuration) (float64 $le.renewDeadline)) (gt (float64 $le.renewDeadline) (float64 $le.retryPeriod))) }}
{{- fail "leaderElection: leaseDuration > renewDeadline > retryPeriod must hold" }}
{{- end }}
{{- if and (not $le.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "leaderElection.enabled=false needs replicaCount 1: two operators would act at once" }}
{{- end }}
- name: EFT_LEADER_ELECTION
  value: {{ $le.enabled | quote }}
- name: EFT_LEASE_NAME
  value: {{ include "eft.leaseName" . | quote }}
- name: EFT_LEASE_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: EFT_LEASE_DURATION
  value: {{ $le.leaseDuration | quote }}
- name: EFT_RENEW_DEADLINE
  value: {{ $le.renewDeadline | quote }}
- name: EFT_RETRY_PERIOD
  value: {{ $le.retryPeriod | quote }}
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
VAP variables that split each URL of a list as eft_api.policy.parse_url does: four stages, the last
(<name>3) a list of {field, url, scheme, host, port, path, bad} with host without case and one trailing dot,
the port defaulted (443 https, 80 http), the path without a trailing /, bad non-empty for user-info, a
backslash, a query, a fragment or . / .. segments. .list is a CEL list of [field, url] pairs.
Call with (dict "name" "llm" "list" "...").
*/}}
{{- define "eft.celURLStages" -}}
- name: {{ .name }}0
  expression: >-
    ({{ .list }}).map(f, {'f': string(f[0]), 'u': string(f[1]),
    's': string(f[1]).indexOf('://') >= 0 ? string(f[1]).substring(0, string(f[1]).indexOf('://')).lowerAscii() : '',
    'r': string(f[1]).indexOf('://') >= 0 ? string(f[1]).substring(string(f[1]).indexOf('://') + 3) : string(f[1])})
- name: {{ .name }}1
  expression: >-
    variables.{{ .name }}0.map(m, {'f': string(m.f), 'u': string(m.u), 's': string(m.s),
    'a': string(m.r).indexOf('/') < 0 ? string(m.r) : string(m.r).substring(0, string(m.r).indexOf('/')),
    'p': string(m.r).indexOf('/') < 0 ? '' : string(m.r).substring(string(m.r).indexOf('/'))})
- name: {{ .name }}2
  expression: >-
    variables.{{ .name }}1.map(m, {'f': string(m.f), 'u': string(m.u), 's': string(m.s), 'p': string(m.p),
    'h': (string(m.a).startsWith('[') ? string(m.a).substring(0, string(m.a).indexOf(']') + 1)
      : (string(m.a).contains(':') ? string(m.a).substring(0, string(m.a).indexOf(':')) : string(m.a))).lowerAscii(),
    'o': string(m.a).startsWith('[') ? string(m.a).substring(string(m.a).indexOf(']') + 1)
      : (string(m.a).contains(':') ? string(m.a).substring(string(m.a).indexOf(':')) : '')})
- name: {{ .name }}3
  expression: >-
    variables.{{ .name }}2.map(m, {'field': string(m.f), 'url': string(m.u), 'scheme': string(m.s),
    'host': string(m.h).endsWith('.') ? string(m.h).substring(0, size(string(m.h)) - 1) : string(m.h),
    'port': string(m.o) == '' ? (m.s == 'https' ? '443' : '80') : string(m.o).substring(1),
    'path': string(m.p).endsWith('/') ? string(m.p).substring(0, size(string(m.p)) - 1) : string(m.p),
    'bad': (string(m.u).contains('@') || string(m.u).contains('\\') || string(m.u).contains('?')
      || string(m.u).contains('#') || (string(m.p) + '/').contains('/../') || (string(m.p) + '/').contains('/./')
      || string(m.p).lowerAscii().contains('%2e')) ? 'bad' : ''})
{{- end }}
