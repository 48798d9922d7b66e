#!/usr/bin/env bash
# Deploys a version of the app to an environment that runs on a Docker Swarm (DEPLOY_TARGET=swarm in
# env/ENV.env; scripts/deploy.sh hands over to this script). docs/swarm.md.
#   scripts/deploy.sh ENV [VERSION]        VERSION defaults to the git commit of this checkout
#
# 1. The image APP_IMAGE:VERSION is used as this host has it, pulled, or built from this checkout
#    (its commit, no changes), then pushed to APP_IMAGE's registry; the stack names it by digest.
#    APP_IMAGE_DIGEST=sha256:... deploys a digest already in the registry (the pipeline's way);
#    with SIGNING_IDENTITY set, only one whose cosign signature verifies.
# 2. A backup first (scripts/backup.sh; not on a first deploy), then the stack with
#    the app as it runs (a first deploy: no replicas yet): the database, cache and proxy start or
#    stay, and the jobs run (roles, then the new version's migrations).
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
release_version "${2:-}"
version=$RELEASE_VERSION
release_init "$env"
swarm_init "$env"
image=$(image_of "$version")
previous=$(current_version)
release_ref "$image"
ref=$RELEASE_REF
# The data as it was before this release's migrations (a first deploy has none yet).
backup_id=-
if swarm_service db; then
	log "deploy $version to $env: backing up before the migrations"
	backup_id=$("$PROJECT_ROOT/scripts/backup.sh" "$env" | tail -n 1) ||
		die "deploy $version to $env stopped: the backup before its migrations failed (users are still served by $previous)"
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
2) die "deploy $version to $env failed: a new task failed (above) and Swarm rolled the app back to $previous (docker service ps ${STACK}_app)" ;;
*) die "deploy $version to $env failed: the app did not converge on $version within $SWARM_DEPLOY_TIMEOUT s (docker service ps ${STACK}_app)" ;;
esac
set_current_version "$version"
record_release "$version" "${ref##*@}" "$backup_id" deploy
log "deployed $version to $env (${ref##*@}, was $previous)"
