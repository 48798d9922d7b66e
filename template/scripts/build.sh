#!/usr/bin/env bash
# Builds the app's image of a named release from this checkout, once.
#   scripts/build.sh ENV VERSION        prints the image (e.g. IMAGE:1.4.2) as its last line
#
# scripts/deploy.sh builds nothing but this checkout's own commit (from a clean tree): a named
# release is built once, here or in CI, and then deployed, pulled and rolled back to as that same
# image. An existing IMAGE:VERSION is never rebuilt: give the new build a new version.
# ENV chooses the settings (env/ENV.env: APP_IMAGE, IMAGE_MIRROR, base image overrides).
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/release.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/release.sh"

[[ $# -eq 2 ]] || die "usage: scripts/build.sh ENV VERSION"
env=$1
version=$2
require_env "$env"
require_version "$version"
check_build_env "$env"
ensure_env_ready "$env"
compose_cmd "$env"
release_config
image=$(image_of "$version")
if image_id "$image" >/dev/null; then
	die "$image exists already: a release is never rebuilt, build this checkout under a new version"
fi
if checkout_changed; then
	log "warning: this checkout has uncommitted changes: they go into $image"
fi
log "building $image from this checkout"
build_image "$version" >/dev/null || die "building $image failed"
log "built $image (image $(image_id "$image" | cut -c8-19))"
echo "$image"
