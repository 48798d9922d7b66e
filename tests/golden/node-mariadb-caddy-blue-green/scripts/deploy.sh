#!/usr/bin/env bash
# Deploys a version of the app to an environment without downtime.
#   scripts/deploy.sh ENV [VERSION]        VERSION defaults to the git commit of this checkout
#
# 1. The image IMAGE:VERSION is used as it is if this host has it (a release is never rebuilt);
#    otherwise it is pulled, or built from this checkout when VERSION is its commit and the tree
#    is clean. Any other named version must exist already: scripts/build.sh ENV VERSION makes it.
# 2. The database's roles are made or brought up to date (the db-roles service, config/db/roles.sh).
#    scripts/migrate.sh runs the migrations of the new image, after a backup.
# 3. The new version starts in the idle colour (app-blue or app-green), hidden from the proxy; once
#    all its replicas are healthy the proxy is pointed at it and confirms it routes there. Only
#    then does the colour that served get no new requests:
#    blue-green keeps it running its release, for a rollback that starts nothing.
# 4. The release (time, version, image ID, backup) is appended to .deploy/ENV/releases.tsv and
#    env/ENV.env names the new version.
# If the new version fails its health check (or its migration), the old replicas keep serving,
# nothing is recorded, and it exits non-zero saying why. One deploy per environment at a time.
#
# By digest: APP_IMAGE_DIGEST=sha256:... pulls APP_IMAGE@DIGEST and deploys it as VERSION (the
# pipeline promotes one digest from environment to environment). With SIGNING_IDENTITY and
# SIGNING_ISSUER set (env/ENV.env or the environment), only a digest whose cosign signature
# verifies for them is deployed: an unsigned, wrongly signed or tag-only deploy is refused.
#
# Settings: DEPLOY_HEALTH_TIMEOUT (seconds a new replica has to become healthy) [180],
#           PROXY_SWITCH_TIMEOUT (seconds the proxy has to confirm a switch) [30],
#           DEPLOY_DRAIN_SECONDS (after the switch, before the old colour is told to stop) [1],
#           DEPLOY_STOP_TIMEOUT (seconds an old replica has to finish its requests) [30].
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/release.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/release.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/deploy.sh ENV [VERSION]"
env=$1
require_env "$env"
on_target "$env" "$@"
release_version "${2:-}"
version=$RELEASE_VERSION
proxy_requirements
release_init "$env"
image=$(image_of "$version")
previous=$(current_version)
verify_release "$image"
if [[ -n $RELEASE_DIGEST ]]; then
	use_digest "$image" "$RELEASE_DIGEST"
	log "deploy $version to $env: using ${image%:*}@$RELEASE_DIGEST as $image"
else
	obtain_image "$image"
fi
image_id=$(image_id "$image")

# The database must run for its roles, the backup and the migrations (a first deploy starts it).
ensure_db_roles "$env" ||
	die "deploy $version to $env stopped: the database roles could not be set (scripts/db-roles.sh $env says why); $previous still serves"
backup_id=$(APP_VERSION=$version "$PROJECT_ROOT/scripts/migrate.sh" "$env" | tail -n 1) ||
	die "deploy $version to $env stopped: its migrations failed (users are still served by $previous)"

if [[ -z $(app_containers) ]]; then
	log "deploy $version to $env: first deploy, starting the stack"
	first_deploy "$version" ||
		die "deploy $version to $env failed: the stack did not become healthy ($(unhealthy_reason); scripts/compose.sh $env ps)"
else
	log "deploy $version to $env: replacing $previous (blue-green)"
	switch_to "$version" ||
		die "deploy $version to $env failed: its replicas did not become healthy; $previous is still serving"
fi
set_current_version "$version"
record_release "$version" "$image_id" "$backup_id" deploy
log "deployed $version to $env (image ${image_id:7:12}, was $previous)"
