# shellcheck shell=bash
# The Kubernetes target (docs/kubernetes.md): the cluster to talk to, the release's manifests built
# from kubernetes/overlays/ENV with the image digest and version, and waiting for the cluster.
# Sourced after lib/common.sh and lib/release.sh, never run.

# The Jobs a deploy runs before the rollout, in order (roles before migrations).
# shellcheck disable=SC2034  # read by scripts/kubernetes/deploy.sh
KUBERNETES_JOBS=(db-roles migrate)
# The workloads (Kind:name) that run the app's image: each gets the release's digest and version.
KUBERNETES_VERSIONED=(Deployment:app Job:migrate)
COMPONENT_LABEL=app.kubernetes.io/component
# The other images, X_IMAGE -> the pin the manifests name: env/ENV.env's X_IMAGE or IMAGE_MIRROR
# replaces it, as in compose.yaml.
declare -gA KUBERNETES_IMAGE_PINS=([MARIADB_IMAGE]=docker.io/library/mariadb:11.4)

# ENV -> the API groups its overlay needs beyond Kubernetes' own (an operator's), and the secret
# files only the operator can fill in (a placeholder would deploy a database that cannot archive).
declare -gA KUBERNETES_API_GROUPS=([production]="")
declare -gA KUBERNETES_OPERATOR_SECRETS=([production]="")
# ENV -> objects an operator makes ready that the Jobs need (e.g. a CloudNativePG Cluster's primary).
declare -gA KUBERNETES_READY_BEFORE_JOBS=([production]="")
# ENV -> the label selector of the pod that takes the database's writes, and its container.
declare -gA KUBERNETES_DB_SELECTOR=([production]="app.kubernetes.io/component=db")
declare -gA KUBERNETES_DB_CONTAINER=([production]=db)

# kubernetes_init ENV: NAMESPACE, KUBECTL (kubectl for KUBERNETES_CONTEXT of env/ENV.env, or the
# current context) and KUBERNETES_DEPLOY_TIMEOUT [300 s]. Dies if the cluster does not answer.
kubernetes_init() {
	local env=$1 context out
	require_cmd kubectl "the Kubernetes target needs kubectl 1.27 or newer (https://kubernetes.io/docs/tasks/tools/)"
	NAMESPACE=$PROJECT_SLUG-$env
	context=${KUBERNETES_CONTEXT:-$(env_value "$env" KUBERNETES_CONTEXT)}
	KUBECTL=(kubectl)
	[[ -z $context ]] || KUBECTL=(kubectl --context "$context")
	KUBERNETES_DEPLOY_TIMEOUT=${KUBERNETES_DEPLOY_TIMEOUT:-$(env_value "$env" KUBERNETES_DEPLOY_TIMEOUT)}
	KUBERNETES_DEPLOY_TIMEOUT=${KUBERNETES_DEPLOY_TIMEOUT:-300}
	[[ $KUBERNETES_DEPLOY_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
		die "KUBERNETES_DEPLOY_TIMEOUT=$KUBERNETES_DEPLOY_TIMEOUT: use a number of seconds, e.g. 300"
	out=$("${KUBECTL[@]}" version --request-timeout=10s 2>&1 >/dev/null) ||
		die "no Kubernetes cluster answers at ${context:-the current kubectl context} ($(tail -n 1 <<<"$out")): set KUBERNETES_CONTEXT in env/$env.env"
}

# kubernetes_require_operator_secrets ENV: the secret files only the operator can fill in (an object
# store's key) hold real values: a placeholder would deploy a database that cannot archive.
kubernetes_require_operator_secrets() {
	local env=$1 name
	for name in ${KUBERNETES_OPERATOR_SECRETS[$env]}; do
		[[ -s $PROJECT_ROOT/secrets/$env/$name && $(<"$PROJECT_ROOT/secrets/$env/$name") != REPLACE-ME ]] ||
			die "secrets/$env/$name holds no real value: put the object store's credentials there (docs/kubernetes.md)"
	done
}

# kubernetes_require_operator_apis ENV: the cluster serves the API groups of the operators ENV's
# overlay needs (CloudNativePG and its Barman Cloud plugin).
kubernetes_require_operator_apis() {
	local group
	for group in ${KUBERNETES_API_GROUPS[$1]}; do
		[[ -n $("${KUBECTL[@]}" api-resources --api-group "$group" --output name 2>/dev/null) ]] ||
			die "the cluster serves no $group API: install its operator first (docs/kubernetes.md)"
	done
}

# kubernetes_wait_ready ENV: the objects ENV's Jobs need are Ready, or this dies naming the one that
# is not within KUBERNETES_DEPLOY_TIMEOUT.
kubernetes_wait_ready() {
	local object
	for object in ${KUBERNETES_READY_BEFORE_JOBS[$1]}; do
		"${KUBECTL[@]}" --namespace "$NAMESPACE" wait --for=condition=Ready "$object" --timeout "${KUBERNETES_DEPLOY_TIMEOUT}s" >&2 ||
			die "$object is not Ready within $KUBERNETES_DEPLOY_TIMEOUT s (kubectl --namespace $NAMESPACE describe $object)"
	done
}

# kubernetes_db_exec ENV: DB_EXEC, the command prefix that runs a command in ENV's database (the
# pod that takes writes: the StatefulSet's, or CloudNativePG's primary).
kubernetes_db_exec() {
	local pod
	pod=$("${KUBECTL[@]}" --namespace "$NAMESPACE" get pod --selector "${KUBERNETES_DB_SELECTOR[$1]}" \
		--output 'jsonpath={.items[0].metadata.name}' 2>/dev/null) || pod=
	[[ -n $pod ]] || die "no database pod in $NAMESPACE (${KUBERNETES_DB_SELECTOR[$1]}): deploy $1 first"
	DB_EXEC=("${KUBECTL[@]}" --namespace "$NAMESPACE" exec -i "$pod" --container "${KUBERNETES_DB_CONTAINER[$1]}" --)
}

# kubernetes_build ENV REF VERSION: the overlay of ENV with the app's image REF (repository@digest)
# and APP_VERSION=VERSION, written to .deploy/ENV/kubernetes/manifests.yaml (path on stdout).
kubernetes_build() {
	local env=$1 ref=$2 version=$3 dir
	dir=$PROJECT_ROOT/.deploy/$env/kubernetes
	mkdir -p "$dir"
	kubernetes_release_kustomization "$env" "$ref" "$version" >"$dir/kustomization.yaml"
	kubectl kustomize --load-restrictor LoadRestrictionsNone "$dir" >"$dir/manifests.yaml.partial" ||
		die "kubectl kustomize could not build kubernetes/overlays/$env (output above)"
	mv "$dir/manifests.yaml.partial" "$dir/manifests.yaml"
	echo "$dir/manifests.yaml"
}

# kubernetes_release_kustomization ENV REF VERSION: the overlay of ENV, the app's image by digest and
# its version in the app's and the migrations' environment.
kubernetes_release_kustomization() {
	local env=$1 ref=$2 version=$3 workload
	cat <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../kubernetes/overlays/$env
images:
  - name: golden-node
    newName: ${ref%%@*}
    digest: ${ref##*@}
YAML
	kubernetes_image_overrides "$env"
	cat <<YAML
patches:
YAML
	for workload in "${KUBERNETES_VERSIONED[@]}"; do
		cat <<YAML
  - target: {kind: ${workload%%:*}, name: ${workload##*:}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: APP_VERSION, value: "$version"}
YAML
	done
}

# kubernetes_image_overrides ENV: kustomize `images` entries for the pins that env/ENV.env (or the
# environment) overrides: X_IMAGE, else IMAGE_MIRROR in place of the pin's registry.
kubernetes_image_overrides() {
	local env=$1 var pin ref mirror last
	mirror=${IMAGE_MIRROR:-$(env_value "$env" IMAGE_MIRROR)}
	for var in "${!KUBERNETES_IMAGE_PINS[@]}"; do
		pin=${KUBERNETES_IMAGE_PINS[$var]}
		ref=${!var:-$(env_value "$env" "$var")}
		[[ -n $ref || -n $mirror ]] || continue
		[[ -n $ref ]] || ref=$mirror/${pin#*/}
		printf '  - name: %s\n' "${pin%:*}"
		last=${ref##*/}
		if [[ $ref == *@* ]]; then
			printf '    newName: "%s"\n    digest: "%s"\n' "${ref%@*}" "${ref#*@}"
		elif [[ $last == *:* ]]; then
			printf '    newName: "%s"\n    newTag: "%s"\n' "${ref%:*}" "${last##*:}"  # quoted: a tag like 17.9 is a string
		else
			printf '    newName: "%s"\n    newTag: latest\n' "$ref"
		fi
	done
}

# kubernetes_apply MANIFESTS SELECTOR: the objects of MANIFESTS that SELECTOR (labels) picks, applied.
kubernetes_apply() {
	"${KUBECTL[@]}" apply --filename "$1" --selector "$2" >&2 ||
		die "kubectl apply ($2) failed in namespace $NAMESPACE (output above)"
}

# kubernetes_run_job MANIFESTS NAME: the Job NAME of this release run to its end (an earlier one of
# that name is deleted first: a Job's pod template cannot change). Dies if it fails or times out.
kubernetes_run_job() {
	local manifests=$1 job=$2 waited=0 state
	"${KUBECTL[@]}" --namespace "$NAMESPACE" delete job "$job" --ignore-not-found --wait=true >&2
	kubernetes_apply "$manifests" "$COMPONENT_LABEL=$job"
	while ((waited < KUBERNETES_DEPLOY_TIMEOUT)); do
		state=$("${KUBECTL[@]}" --namespace "$NAMESPACE" get job "$job" \
			--output 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type} {end}' 2>/dev/null) || state=
		case " $state " in
		*" Complete "*) return 0 ;;
		*" Failed "*) die "the $job Job failed in $NAMESPACE (kubectl --namespace $NAMESPACE logs job/$job)" ;;
		esac
		sleep 2
		waited=$((waited + 2))
	done
	die "the $job Job did not finish within $KUBERNETES_DEPLOY_TIMEOUT s (kubectl --namespace $NAMESPACE describe job/$job)"
}

# kubernetes_rollout MANIFESTS: the app's Deployment, Service, autoscaler and budget applied, and the
# rollout awaited (new pods ready before old ones stop). Returns non-zero if it did not complete.
kubernetes_rollout() {
	kubernetes_apply "$1" "$COMPONENT_LABEL=app"
	"${KUBECTL[@]}" --namespace "$NAMESPACE" rollout status deployment/app --timeout "${KUBERNETES_DEPLOY_TIMEOUT}s" >&2
}
