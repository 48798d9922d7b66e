#!/usr/bin/env bash
# Returns an environment to an earlier release, with the same switch as deploy.sh.
#   scripts/rollback.sh ENV [VERSION] [--restore-db]
# VERSION defaults to the release before the current one in .deploy/ENV/releases.tsv; its image
# is the one recorded then (exact image ID).
# --restore-db also restores the backup taken before the current release's migrations, so that
# the data is as it was before that deploy (writes made since are kept in the replaced database,
# see scripts/restore.sh).
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/release.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/release.sh"

[[ $# -ge 1 ]] || die "usage: scripts/rollback.sh ENV [VERSION] [--restore-db]"
env=$1
shift
restore_db=no
target=
for arg in "$@"; do
	case $arg in
	--restore-db) restore_db=yes ;;
	-*) die "unknown option $arg" ;;
	*) target=$arg ;;
	esac
done
require_env "$env"
on_target "$env" "$env" "$@"
[[ -z $target ]] || require_version "$target"
proxy_requirements
release_init "$env"
current=$(current_version)
rollback_target "$target"
target=$ROLLBACK_TARGET
recorded=$(release_field "$target" 3)
[[ -n $recorded ]] || die "$target was never released to $env"
image=$(image_of "$target")
[[ $(image_id "$image") == "$recorded" ]] ||
	die "image $image is missing or is not the one released as $target (${recorded:7:12}): it cannot be rolled back to"

backup_id=-
if [[ $restore_db == yes ]]; then
	backup_id=$(release_field "$current" 4)
	[[ -n $backup_id && $backup_id != - ]] || die "no backup was recorded for $current: cannot restore the data before it"
	log "rollback of $env: restoring backup $backup_id, taken before $current was deployed"
	confirm=$(confirmation_flag "$env")
	"$PROJECT_ROOT/scripts/restore.sh" "$env" "$backup_id" ${confirm:+"$confirm"} ||
		die "rollback of $env stopped before the switch: restoring $backup_id failed (the line above says where; $current still serves)"
fi

log "rollback of $env: $current -> $target"
switch_to "$target" || die "rollback of $env to $target failed: its replicas did not become healthy; $current still serves"
set_current_version "$target"
record_release "$target" "$recorded" "$backup_id" rollback
log "rolled $env back to $target (image ${recorded:7:12})$([[ $restore_db == yes ]] && echo ", data restored from $backup_id")"
