# shellcheck shell=bash
# Point-in-time recovery (Compose target): base backups in backups/ENV/base/ID/ and the archive of
# the WAL in the db-wal volume (/var/lib/postgresql/wal-archive in the db service), one directory per
# cluster. Shared by base-backup.sh, restore.sh --to and verify-archive.sh; what is postgres's own
# is in lib/archive.sh. Sourced after lib/common.sh, lib/db.sh and lib/backups.sh, never run.

ARCHIVE_DIR=/var/lib/postgresql/wal-archive
# Where a throwaway copy of the db service reads the archive (the volume, read-only).
ARCHIVE_REPLAY_DIR=/var/lib/postgresql/wal-archive
# How long a recovery may replay before it is given up [3600 s].
PITR_TIMEOUT=${PITR_TIMEOUT:-3600}

# shellcheck source=archive.sh
source "$PROJECT_ROOT/scripts/lib/archive.sh"

# pitr_init ENV: BASE_DIR (created 0700), ARCHIVE_EXEC (a command in the service that holds the
# archive); dies unless ENV runs on Compose.
pitr_init() {
	[[ $(deploy_target "$1") == compose ]] ||
		die "point-in-time recovery runs on the Compose target only: $1 has DEPLOY_TARGET=$(deploy_target "$1") (use scripts/restore.sh $1 BACKUP_ID)"
	[[ $PITR_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "PITR_TIMEOUT '$PITR_TIMEOUT' must be a whole number of seconds"
	BASE_DIR=$BACKUP_DIR/base
	mkdir -p "$BASE_DIR"
	chmod 0700 "$BASE_DIR"
	compose_cmd "$1"
	ARCHIVE_VOLUME="${PROJECT_SLUG}-$1_db-wal"
	ARCHIVE_EXEC=("${COMPOSE[@]}" exec -T db)
}

# pitr_target TIME: PITR_TARGET, TIME as epoch seconds, or "latest"; dies unless it is latest or
# a past UTC time like 2026-12-04T15:04:05Z.
pitr_target() {
	local epoch
	PITR_TARGET=latest
	[[ $1 == latest ]] && return 0
	if ! [[ $1 =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] || ! epoch=$(date -u -d "$1" +%s 2>/dev/null); then
		die "'$1' is not a time: use latest or a UTC time like $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	fi
	((epoch <= $(date -u +%s))) || die "$1 is in the future: use latest or a time before now"
	# shellcheck disable=SC2034  # read by the scripts that source this
	PITR_TARGET=$epoch
}

# pitr_base_for TARGET: PITR_BASE, the directory of the newest base backup that ended before
# TARGET (epoch seconds or latest); dies naming the earliest point there is.
pitr_base_for() {
	local id ended
	for id in $(BACKUP_DIR=$BASE_DIR list_backups); do
		ended=$(meta "$BASE_DIR/$id" ENDED_EPOCH)
		if [[ $1 == latest ]] || ((ended <= $1)); then
			# shellcheck disable=SC2034  # read by the scripts that source this
			PITR_BASE=$BASE_DIR/$id
			return 0
		fi
	done
	id=$(BACKUP_DIR=$BASE_DIR list_backups | tail -n 1)
	[[ -n $id ]] || die "no base backup in ${BASE_DIR#"$PROJECT_ROOT"/} yet: run scripts/base-backup.sh first"
	die "no base backup ended before that time: the earliest point to recover to is $(meta "$BASE_DIR/$id" ENDED)"
}

# pitr_start_throwaway CONTAINER IMAGE ENV: a throwaway copy of the db service (no network, its
# secret files, the archive read-only at ARCHIVE_REPLAY_DIR's volume), idle until told what to run.
pitr_start_throwaway() {
	docker volume inspect "$ARCHIVE_VOLUME" >/dev/null 2>&1 || die "the archive volume $ARCHIVE_VOLUME is missing"
	db_secret_mounts "$3"
	docker run --detach --name "$1" "${DB_THROWAWAY_ARGS[@]}" "${DB_SECRET_MOUNTS[@]}" \
		--volume "$ARCHIVE_VOLUME:/var/lib/postgresql:ro" --entrypoint sleep "$2" infinity >/dev/null ||
		die "cannot start a throwaway $2 container"
}

# pitr_prune ENV: what no kept base backup needs is deleted from the archive: in each cluster's
# directory the files before its oldest kept base backup's; directories of clusters that have no
# base backup left, unless they are the live cluster's.
pitr_prune() {
	local live id cluster dir
	declare -A oldest=()
	live=$(archive_cluster)
	for id in $(BACKUP_DIR=$BASE_DIR list_backups); do
		cluster=$(meta "$BASE_DIR/$id" SYSTEM_ID)
		oldest[$cluster]=$(meta "$BASE_DIR/$id" "$ARCHIVE_START_KEY")
	done
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	for dir in $("${ARCHIVE_EXEC[@]}" sh -c 'ls "$0" 2>/dev/null || true' "$ARCHIVE_DIR"); do
		[[ $dir =~ $ARCHIVE_CLUSTER_RE ]] || continue
		if [[ -n ${oldest[$dir]:-} ]]; then
			archive_prune_before "$ARCHIVE_DIR/$dir" "${oldest[$dir]}"
		elif [[ $dir != "$live" ]]; then
			"${ARCHIVE_EXEC[@]}" rm -rf "${ARCHIVE_DIR:?}/$dir"
			log "retention: deleted the archive of cluster $dir (no base backup of it is left)"
		fi
	done
	log "retention: the archive keeps what the kept base backups need"
}

# push_wal_off_host ENV ID: base backup ID and the whole archive (one tar) into the restic
# repository, when one is configured.
push_wal_off_host() {
	[[ -n ${BACKUP_RESTIC_REPOSITORY:-} ]] || return 0
	BACKUP_DIR=$BASE_DIR push_off_host "$1" "$2"
	"${ARCHIVE_EXEC[@]}" tar -C "$ARCHIVE_DIR" -cf - . |
		restic backup --quiet --tag "$1" --tag wal --stdin --stdin-filename wal-archive.tar ||
		die "the off-host copy of the archive failed (base backup $2 is complete)"
	log "off-host copy of the archive in the restic repository"
}
