#!/usr/bin/env bash
# Deploys a version of the app to an environment that runs on Kubernetes (DEPLOY_TARGET=kubernetes in
# env/ENV.env; scripts/deploy.sh hands over to this script). docs/kubernetes.md.
#   scripts/deploy.sh ENV [VERSION]        VERSION defaults to the git commit of this checkout
#
# 1. The image APP_IMAGE:VERSION is used as this host has it, pulled, or built from this checkout
#    (its commit, no changes), then pushed to APP_IMAGE's registry; the manifests name it by digest.
#    APP_IMAGE_DIGEST=sha256:... deploys a digest already in the registry (the pipeline's way);
#    with SIGNING_IDENTITY set, only one whose cosign signature verifies.
# 2. kubernetes/overlays/ENV is built with that digest and version (.deploy/ENV/kubernetes/), and
#    everything but the app and the Jobs is applied: namespace, settings, secrets, database, cache,
#    network policies, ingress.
# 3. What an operator makes (a CloudNativePG Cluster) is awaited until Ready, then the Jobs run to
#    their end, in order (database roles, then this version's migrations).
# 4. The app's Deployment is applied and its rollout awaited: each new pod ready before an old one
#    stops. A rollout that does not complete is undone (kubectl rollout undo) and nothing recorded.
# 5. The release (time, version, digest) is appended to .deploy/ENV/releases.tsv and env/ENV.env
#    names the new version.
#
# Settings (env/ENV.env or the environment): KUBERNETES_CONTEXT (kubectl's context) [current],
# KUBERNETES_DEPLOY_TIMEOUT (seconds for a Job, an operator's object or the rollout) [300].
# Refused before anything changes: an operator's secret file holding its placeholder, an
# operator's API (CloudNativePG) that the cluster does not serve.
set -Eeuo pipefail
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/release.sh
source "$here/../lib/release.sh"
# shellcheck source=../lib/kubernetes.sh
source "$here/../lib/kubernetes.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/deploy.sh ENV [VERSION]"
env=$1
require_env "$env"
release_version "${2:-}"
version=$RELEASE_VERSION
release_init "$env"
kubernetes_require_operator_secrets "$env"
kubernetes_init "$env"
kubernetes_require_operator_apis "$env"
image=$(image_of "$version")
previous=$(current_version)
release_ref "$image"
ref=$RELEASE_REF

manifests=$(kubernetes_build "$env" "$ref" "$version")
kubernetes_apply "$manifests" "$COMPONENT_LABEL notin (app,$(IFS=,; echo "${KUBERNETES_JOBS[*]:-none}"))"
kubernetes_wait_ready "$env"
for job in "${KUBERNETES_JOBS[@]}"; do
	log "deploy $version to $env: running the $job Job"
	kubernetes_run_job "$manifests" "$job"
done
if ! kubernetes_rollout "$manifests"; then
	"${KUBECTL[@]}" --namespace "$NAMESPACE" rollout undo deployment/app >&2 || true
	die "deploy $version to $env failed: the rollout did not complete within $KUBERNETES_DEPLOY_TIMEOUT s and was undone (kubectl --namespace $NAMESPACE describe deployment/app)"
fi
set_current_version "$version"
record_release "$version" "${ref##*@}" - deploy
log "deployed $version to $env (${ref##*@}, was $previous)"
