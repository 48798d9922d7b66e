#!/usr/bin/env bash
# Deploys a version of the app to an environment without downtime.
#   scripts/deploy.sh ENV [VERSION]        VERSION defaults to the git commit of this checkout
#
# 1. The image IMAGE:VERSION is used as it is if this host has it (a release is never rebuilt);
#    otherwise it is pulled, or built from this checkout when VERSION is its commit and the tree
#    is clean. Any other named version must exist already: scripts/build.sh ENV VERSION makes it.
# 3. The new version starts in the idle colour (app-blue or app-green), hidden from the proxy; once
#    all its replicas are healthy the proxy is pointed at it and confirms it routes there. Only
#    then does the colour that served get no new requests:
#    rolling stops it (SIGTERM: requests in flight finish).
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
image=$(image_of "$version")
previous=$(current_version)
signing_identity=${SIGNING_IDENTITY:-$(env_setting SIGNING_IDENTITY)}
if [[ -n $signing_identity ]]; then
	[[ -n $digest ]] || die "env/$env.env sets SIGNING_IDENTITY: deploy an image by its digest (APP_IMAGE_DIGEST=sha256:..., as the pipeline does), never by tag alone"
	verify_signature "${image%:*}@$digest" "$signing_identity" "${SIGNING_ISSUER:-$(env_setting SIGNING_ISSUER)}"
	log "deploy $version to $env: ${image%:*}@$digest is signed by $signing_identity"
fi

if [[ -n $digest ]]; then
	use_digest "$image" "$digest"
	log "deploy $version to $env: using ${image%:*}@$digest as $image"
elif image_id "$image" >/dev/null; then
	log "deploy $version to $env: using image $image (releases are never rebuilt)"
elif pull_error=$(docker pull --quiet "$image" 2>&1 >/dev/null); then
	log "deploy $version to $env: pulled $image"
elif [[ $version == "$commit" ]] && ! checkout_changed; then
	log "deploy $version to $env: building $image from this checkout (its commit, no changes)"
	build_image "$version" >/dev/null || die "building $image failed"
else
	die "image $image is not on this host and the pull failed ($(tail -n 1 <<<"$pull_error")): build it first (scripts/build.sh $env $version) or push it to the registry"
fi
image_id=$(image_id "$image")
backup_id=-

if [[ -z $(app_containers) ]]; then
	log "deploy $version to $env: first deploy, starting the stack"
	first_deploy "$version" ||
		die "deploy $version to $env failed: the stack did not become healthy (scripts/compose.sh $env ps)"
else
	log "deploy $version to $env: replacing $previous (rolling)"
	switch_to "$version" ||
		die "deploy $version to $env failed: its replicas did not become healthy; $previous is still serving"
fi
set_current_version "$version"
record_release "$version" "$image_id" "$backup_id" deploy
log "deployed $version to $env (image ${image_id:7:12}, was $previous)"
