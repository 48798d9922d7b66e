#!/usr/bin/env bash
# CI stage "release": builds the app's image once and pushes it as REPOSITORY:VERSION with BuildKit's
# provenance (mode=max) and SBOM attestations; prints REPOSITORY@DIGEST, the one reference every
# later stage and every environment uses (.ci-reports/image too). Log in to the registry first.
#   scripts/ci/release.sh REPOSITORY VERSION      e.g. ghcr.io/acme/billing-api 3f2c1a9b8d7e
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

[[ $# -eq 2 ]] || die "usage: scripts/ci/release.sh REPOSITORY VERSION"
repository=$1 version=$2
[[ $repository =~ ^[a-z0-9]+([._:/-][a-z0-9]+)*$ && $repository != *@* && ${repository##*/} != *:* ]] ||
	die "REPOSITORY is an image repository without tag or digest (lowercase), e.g. ghcr.io/acme/billing-api: $repository"
require_version "$version"
require_cmd docker "install Docker Engine with buildx"
check_build_env
reports=$PROJECT_ROOT/.ci-reports
mkdir -p "$reports"
rm -f "$reports/build.json" "$reports/image"
docker buildx build "$PROJECT_ROOT" --target runtime --build-arg "APP_VERSION=$version" \
	--secret "id=build_env,src=${BUILD_ENV_FILE:-/dev/null}" --build-arg "BUILD_ENV_STAGE=${BUILD_ENV_FILE:+-credentials}" \
	--tag "$repository:$version" --provenance=mode=max --sbom=true --push \
	--metadata-file "$reports/build.json" >&2 || die "building or pushing $repository:$version failed"
digest=$(sed -n 's/.*"containerimage.digest": *"\(sha256:[0-9a-f]\{64\}\)".*/\1/p' "$reports/build.json" | head -n 1)
[[ -n $digest ]] || die "buildx reported no image digest (.ci-reports/build.json)"
printf '%s@%s\n' "$repository" "$digest" | tee "$reports/image"
