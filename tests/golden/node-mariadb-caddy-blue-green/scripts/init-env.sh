#!/usr/bin/env bash
# Prepares an environment on this host: env/ENV.env and env/ENV.app.env from their examples and every missing secret
# file in secrets/ENV/ (random values, 0640, group of the containers' secret readers).
# Safe to rerun: existing files are kept. scripts/compose.sh runs it on first use.
#   scripts/init-env.sh ENV
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -eq 1 ]] || die "usage: scripts/init-env.sh ENV"
require_env "$1"
ensure_env_ready "$1"
log "$1 is ready: settings in env/$1.env (Compose) and env/$1.app.env (the app), secrets in secrets/$1/"
