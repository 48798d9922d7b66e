#!/usr/bin/env bash
# Proves a backup restores: loads it into a throwaway database container (no network) of the
# environment's database image and checks the tables, their row counts against those found in the
# dump at backup time, and the schema version. Records the result in the backup's directory
# ("verified" or "verify-failed") and in metrics/ENV/backup.prom for monitoring.
#   scripts/verify-backup.sh ENV [BACKUP_ID]          (default: latest)
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/db.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/db.sh"
# shellcheck source=lib/backups.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/backups.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/verify-backup.sh ENV [BACKUP_ID]"
env=$1
require_env "$env"
require_backup_id "${2:-latest}"
backups_init "$env"
dir=$(resolve_backup "${2:-latest}")
id=$(basename "$dir")
container="$PROJECT_SLUG-$env-verify-$(random_secret | cut -c1-8)"

finish() {
	docker rm -f --volumes "$container" >/dev/null 2>&1 || true
}
trap finish EXIT

fail() {
	printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >"$dir/verify-failed"
	rm -f "$dir/verified"
	record_metric "$env" backup_last_verify_ok 0
	die "backup $id FAILED verification: $1"
}

log "verify $id of $env: signature and checksums"
problem=$(check_backup "$dir" "$env" 2>&1 >/dev/null) || fail "${problem##*error: }"

db_image "$env"
image=$DB_IMAGE
log "verify $id of $env: restoring into a throwaway $image container"
db_secret_mounts "$env"
docker run --detach --name "$container" "${DB_THROWAWAY_ARGS[@]}" "${DB_SECRET_MOUNTS[@]}" "$image" >/dev/null ||
	die "cannot start a throwaway $image container"
db_use_container "$container"
db_wait_ready || fail "the throwaway database did not start"
problem=$(restore_differs "$dir" "$env") || fail "$problem"
version=$(meta "$dir" SCHEMA_VERSION)

date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/verified"
rm -f "$dir/verify-failed"
record_metric "$env" backup_last_verify_ok 1
record_metric "$env" backup_last_verify_success_timestamp_seconds "$(date -u +%s)"
log "backup $id of $env verified: $(wc -l <"$dir/counts.tsv") tables, row counts and schema version $version match"
