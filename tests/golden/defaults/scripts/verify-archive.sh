#!/usr/bin/env bash
# Proves point-in-time recovery works: restores the latest base backup in a throwaway copy of the
# db service (no network, the archive of the WAL read-only) and replays it to its end, then checks
# that the recovered database has the app's tables and a schema version. Marks the base backup
# "verified" (retention keeps the newest verified one) and records the result in
# metrics/ENV/backup.prom (the PitrVerifyFailed alert watches it, with monitoring).
#   scripts/verify-archive.sh ENV
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/db.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/db.sh"
# shellcheck source=lib/backups.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/backups.sh"
# shellcheck source=lib/pitr.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/pitr.sh"

[[ $# -eq 1 ]] || die "usage: scripts/verify-archive.sh ENV"
env=$1
require_env "$env"
backups_init "$env"
pitr_init "$env"
pitr_base_for latest
dir=$PITR_BASE
id=$(basename "$dir")
container="$PROJECT_SLUG-$env-verify-archive-$(random_secret | cut -c1-8)"
trap 'docker rm -f --volumes "$container" >/dev/null 2>&1 || true' EXIT

fail() {
	printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >"$dir/verify-failed"
	rm -f "$dir/verified"
	record_metric "$env" pitr_last_verify_ok 0
	die "point-in-time recovery from $id FAILED verification: $1"
}

problem=$(check_backup "$dir" "$env" 2>&1 >/dev/null) || fail "${problem##*error: }"
db_image "$env"
pitr_flush "$env"
log "verify-archive $env: base backup $id, replaying the whole archive in $container"
problem=$( (pitr_recover "$dir" "$env" latest "$container" "$DB_IMAGE") 2>&1 >/dev/null) || fail "${problem##*error: }"
db_use_container "$container"
reached=$(pitr_reached)
tables=$(db_counts "$DB_NAME" | wc -l)
((tables > 0)) || fail "no tables after the replay"
version=$(db_schema_version "$DB_NAME")
date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/verified"
rm -f "$dir/verify-failed"
record_metric "$env" pitr_last_verify_ok 1
record_metric "$env" pitr_last_verify_success_timestamp_seconds "$(date -u +%s)"
log "point-in-time recovery of $env verified: base backup $id replayed up to $reached, $tables tables, schema version $version"
