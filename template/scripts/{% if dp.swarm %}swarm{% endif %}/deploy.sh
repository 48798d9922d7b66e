#!/usr/bin/env bash
# Deploys a version of the app to an environment that runs on a Docker Swarm (DEPLOY_TARGET=swarm in
# env/ENV.env; scripts/deploy.sh hands over to this script). docs/swarm.md.
#   scripts/deploy.sh ENV [VERSION]        VERSION defaults to the git commit of this checkout
#
# 1. The image APP_IMAGE:VERSION is used as this host has it, pulled, or built from this checkout
#    (its commit, no changes), then pushed to APP_IMAGE's registry; the stack names it by digest.
#    APP_IMAGE_DIGEST=sha256:... deploys a digest already in the registry (the pipeline's way);
#    with SIGNING_IDENTITY set, only one whose cosign signature verifies.
# 2. The stack is deployed with the app as it runs (a first deploy: no replicas yet): the database,
#    cache and proxy start or stay, and the jobs run (roles, then the new version's migrations).
# 3. Then the stack again with the new version of the app: Swarm replaces one task at a time, each
#    new task started and healthy before an old one stops; a new task that fails its health check
#    makes Swarm roll the app back by itself.
# 4. The release (time, version, digest) is appended to .deploy/ENV/releases.tsv and env/ENV.env
#    names the new version. On failure nothing is recorded and it exits non-zero saying why.
#
# Settings: SWARM_HOST (env/ENV.env: the manager, as DOCKER_HOST), SWARM_DEPLOY_TIMEOUT (seconds
# for a job or the app's update) [300].
set -Eeuo pipefail
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/release.sh
source "$here/../lib/release.sh"
# shellcheck source=../lib/swarm.sh
source "$here/../lib/swarm.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/deploy.sh ENV [VERSION]"
env=$1
require_env "$env"
commit=$(git -C "$PROJECT_ROOT" rev-parse --short=12 HEAD 2>/dev/null || true)
version=${2:-$commit}
[[ -n $version ]] || die "no VERSION given and $PROJECT_ROOT is not a git checkout: name the version"
require_version "$version"
if [[ -z ${2:-} ]] && checkout_changed; then
	die "the checkout has uncommitted changes: commit them, or name the version explicitly"
fi
digest=${APP_IMAGE_DIGEST:-}
[[ -z $digest || $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "APP_IMAGE_DIGEST is not sha256: and 64 hex digits: $digest"
release_init "$env"
swarm_init "$env"
image=$(image_of "$version")
previous=$(current_version)

signing_identity=${SIGNING_IDENTITY:-$(env_setting SIGNING_IDENTITY)}
if [[ -n $signing_identity ]]; then
	[[ -n $digest ]] || die "env/$env.env sets SIGNING_IDENTITY: deploy an image by its digest (APP_IMAGE_DIGEST=sha256:..., as the pipeline does), never by tag alone"
	verify_signature "${image%:*}@$digest" "$signing_identity" "${SIGNING_ISSUER:-$(env_setting SIGNING_ISSUER)}"
fi
if [[ -n $digest ]]; then
	ref=$image@$digest
	log "deploy $version to $env: $ref (from the registry, by digest)"
else
	if image_id "$image" >/dev/null; then
		log "deploy $version to $env: using image $image (releases are never rebuilt)"
	elif docker pull --quiet "$image" >/dev/null 2>&1; then
		log "deploy $version to $env: pulled $image"
	elif [[ $version == "$commit" ]] && ! checkout_changed; then
		log "deploy $version to $env: building $image from this checkout (its commit, no changes)"
		build_image "$version" >/dev/null || die "building $image failed"
	else
		die "image $image is not on this host and the pull failed: build it first (scripts/build.sh $env $version)"
	fi
	ref=$(swarm_pushed_ref "$image")
	log "deploy $version to $env: pushed $ref"
fi

# First the stack with the app as it runs (a first deploy: no replicas yet), the new jobs.
read -r serving serving_version < <(swarm_spec app) || true
if [[ -n ${serving:-} ]]; then
	replicas=()
else
	log "deploy $version to $env: first deploy of stack $STACK"
	serving=$ref serving_version=$version replicas=(APP_REPLICAS=0)
fi
swarm_deploy APP_IMAGE_REF="$serving" APP_VERSION="$serving_version" MIGRATE_IMAGE_REF="$ref" MIGRATE_VERSION="$version" "${replicas[@]}"
for job in "${SWARM_JOBS[@]}"; do
	swarm_wait_job "$job"
done

mark=$(swarm_update_mark)
swarm_deploy APP_IMAGE_REF="$ref" APP_VERSION="$version" MIGRATE_IMAGE_REF="$ref" MIGRATE_VERSION="$version"
status=0
swarm_wait_app "$ref" "$mark" || status=$?
case $status in
0) ;;
2) die "deploy $version to $env failed: a new task failed its health check and Swarm rolled the app back to $previous (docker service ps ${STACK}_app)" ;;
*) die "deploy $version to $env failed: the app did not converge on $version within $SWARM_DEPLOY_TIMEOUT s (docker service ps ${STACK}_app)" ;;
esac
set_current_version "$version"
record_release "$version" "${ref##*@}" - deploy
log "deployed $version to $env (${ref##*@}, was $previous)"
