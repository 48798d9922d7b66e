#!/usr/bin/env bash
# Makes the database's roles and gives each what it needs (config/db/roles.sh, in the db-roles
# one-off container): the owner for migrations, the app's data-only role, the exporter's and the
# backup's. Every deploy runs it; scripts/rotate-secret.sh runs it when it changes a role's
# password; run it yourself once after updating from a release without roles.
#   scripts/db-roles.sh ENV
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -eq 1 ]] || die "usage: scripts/db-roles.sh ENV"
env=$1
require_env "$env"
# A Swarm environment: refused in one line until this script has a Swarm version.
on_target "$env" "$@"
ensure_env_ready "$env"
compose_cmd "$env"
ensure_db_roles "$env" || die "the roles of $env's database could not be set (see above)"
log "the roles of $env's database are in place"
