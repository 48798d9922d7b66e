#!/usr/bin/env bash
# The one way to run docker compose for an environment: its compose files, env file and
# project name (<slug>-<env>). First use of an environment creates its env file and secrets.
#   scripts/compose.sh ENV [docker compose arguments...]
#   e.g. scripts/compose.sh dev up -d --build --wait
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -ge 1 ]] || die "usage: scripts/compose.sh ENV [docker compose arguments...]"
env=$1
shift
require_env "$env"
require_cmd docker "install Docker Engine with the compose plugin"
# A build (build, up --build) gets the build's credentials, checked first.
[[ " $* " != *" build "* && " $* " != *" --build "* ]] || check_build_env "$env"
ensure_env_ready "$env"
# Before `up`: images that cannot be had are named in one line (not Compose's registry error).
[[ ${1:-} != up ]] || ensure_images "$env" "${@:2}"
compose_cmd "$env"
exec "${COMPOSE[@]}" "$@"
