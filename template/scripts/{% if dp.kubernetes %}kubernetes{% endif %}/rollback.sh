#!/usr/bin/env bash
# Returns an environment on Kubernetes to an earlier release (scripts/rollback.sh hands over to this
# script when env/ENV.env sets DEPLOY_TARGET=kubernetes). docs/kubernetes.md.
#   scripts/rollback.sh ENV [VERSION]
# VERSION defaults to the release before the current one in .deploy/ENV/releases.tsv; the app runs
# the exact image recorded then (by digest), rolled out as a deploy is. Migrations are not undone.
set -Eeuo pipefail
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/release.sh
source "$here/../lib/release.sh"
# shellcheck source=../lib/kubernetes.sh
source "$here/../lib/kubernetes.sh"

cluster_rollback "on Kubernetes" "$@"
env=$ROLLBACK_ENV current=$ROLLBACK_CURRENT target=$ROLLBACK_TARGET digest=$ROLLBACK_DIGEST
kubernetes_init "$env"
ref=$(image_of "$target")@$digest

log "rollback of $env: $current -> $target ($ref)"
manifests=$(kubernetes_build "$env" "$ref" "$target")
kubernetes_rollout "$manifests" ||
	die "rollback of $env to $target failed: the rollout did not complete within $KUBERNETES_DEPLOY_TIMEOUT s (kubectl --namespace $NAMESPACE describe deployment/app)"
set_current_version "$target"
record_release "$target" "$digest" - rollback
log "rolled $env back to $target (was $current)"
