# shellcheck shell=bash
# Point-in-time recovery of PostgreSQL (Compose target): base backups in backups/ENV/base/ID/ and
# the WAL archive that the server fills (config/db/archive-wal.sh) in the db-wal volume, one
# directory per cluster. Shared by base-backup.sh, restore.sh --to and verify-archive.sh.
# Sourced after lib/common.sh, lib/db.sh and lib/backups.sh, never run.

WAL_ARCHIVE_DIR=/var/lib/postgresql/wal-archive
PGDATA_DIR=/var/lib/postgresql/data
# How long a recovery may replay before it is given up [3600 s].
PITR_TIMEOUT=${PITR_TIMEOUT:-3600}

# pitr_init ENV: BASE_DIR (created 0700); dies unless ENV runs on Compose.
pitr_init() {
	[[ $(deploy_target "$1") == compose ]] ||
		die "point-in-time recovery runs on the Compose target only: $1 has DEPLOY_TARGET=$(deploy_target "$1") (use scripts/restore.sh $1 BACKUP_ID)"
	[[ $PITR_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "PITR_TIMEOUT '$PITR_TIMEOUT' must be a whole number of seconds"
	BASE_DIR=$BACKUP_DIR/base
	mkdir -p "$BASE_DIR"
	chmod 0700 "$BASE_DIR"
	compose_cmd "$1"
	WAL_VOLUME="${PROJECT_SLUG}-$1_db-wal"
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

# pitr_flush: the live server archives the WAL it is writing now (best effort: the database may
# be a new, empty one after its volume was lost, and then has nothing of the old cluster's).
pitr_flush() {
	local wal _
	db_use_service "$1"
	wal=$(db_psql postgres -At -c "SELECT pg_walfile_name(pg_switch_wal())" 2>/dev/null) || return 0
	for _ in $(seq 30); do
		[[ $(db_psql postgres -At -c "SELECT last_archived_wal >= '$wal' FROM pg_stat_archiver" 2>/dev/null) == t ]] && return 0
		sleep 1
	done
	log "warning: the server has not archived $wal after 30 s: the last seconds may be missing"
}

# pitr_recover BASE_DIR ENV TARGET CONTAINER IMAGE: CONTAINER, a throwaway copy of the db service
# (no network, the archive volume read-only), restores the base backup and replays the archive up
# to TARGET (epoch seconds) or to its end (latest), then ends recovery. Dies on failure. When
# nothing was committed after TARGET, the end of the archive is the state at TARGET: replayed whole.
pitr_recover() {
	local dir=$1 env=$2 target=$3 container=$4 image=$5 cluster settings=() waited=0 fatal
	cluster=$(meta "$dir" SYSTEM_ID)
	settings=(-c archive_mode=off
		-c "restore_command=f=$WAL_ARCHIVE_DIR/$cluster/%f.gz; test -f \$f && gzip -dc \$f > %p"
		-c recovery_target_action=promote)
	[[ $target == latest ]] || settings+=(-c "recovery_target_time=$(date -u -d "@$target" '+%Y-%m-%d %H:%M:%S+00')")
	docker volume inspect "$WAL_VOLUME" >/dev/null 2>&1 || die "the WAL archive volume $WAL_VOLUME is missing"
	docker run --detach --name "$container" "${DB_THROWAWAY_ARGS[@]}" --volume "$WAL_VOLUME:/var/lib/postgresql:ro" \
		--entrypoint sleep "$image" infinity >/dev/null || die "cannot start a throwaway $image container"
	open_backup "$dir" "$env" | docker exec -i "$container" tar -x -C "$PGDATA_DIR" ||
		die "cannot unpack base backup $(basename "$dir")"
	docker exec "$container" sh -c "chmod 0700 '$PGDATA_DIR' && touch '$PGDATA_DIR/recovery.signal'"
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	docker exec --detach "$container" sh -c 'exec postgres -D "$0" "$@" >/tmp/recovery.log 2>&1' "$PGDATA_DIR" "${settings[@]}"
	db_use_container "$container"
	until [[ $(db_psql postgres -At -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]]; do
		if ((waited > 5)) && ! docker exec "$container" sh -c 'test -f "$0/postmaster.pid"' "$PGDATA_DIR" 2>/dev/null; then
			# The server's own last error: not the refusals our polling got while it recovered or stopped.
			fatal=$(docker exec "$container" grep -E 'FATAL|PANIC' /tmp/recovery.log |
				grep -vE 'the database system is (starting up|in recovery mode|shutting down|not yet accepting connections)' | tail -n 1)
			[[ $target != latest && $fatal == *"before configured recovery target was reached"* ]] ||
				die "recovery stopped: ${fatal:-see /tmp/recovery.log in $container}"
			# Nothing was committed after TARGET: the end of the archive is the state at TARGET.
			log "nothing in the archive was committed after $(date -u -d "@$target" +%Y-%m-%dT%H:%M:%SZ): replaying all of it"
			docker rm -f --volumes "$container" >/dev/null
			pitr_recover "$dir" "$env" latest "$container" "$image"
			return
		fi
		((waited < PITR_TIMEOUT)) || die "recovery did not end within PITR_TIMEOUT=$PITR_TIMEOUT s"
		sleep 1
		waited=$((waited + 1))
	done
}

# pitr_reached: the time of the last transaction the recovered database replayed (UTC), or the
# base backup's end when the archive had none after it.
pitr_reached() {
	db_psql postgres -At -c "SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'the base backup''s end')"
}

# pitr_prune ENV: WAL no kept base backup needs is deleted: in each cluster's directory the
# segments before its oldest kept base backup; directories of clusters that have no base backup
# left, unless they are the live cluster's.
pitr_prune() {
	local live id cluster dir
	declare -A oldest_wal=()
	live=$(db_psql postgres -At -c "SELECT system_identifier FROM pg_control_system()")
	for id in $(BACKUP_DIR=$BASE_DIR list_backups); do
		cluster=$(meta "$BASE_DIR/$id" SYSTEM_ID)
		oldest_wal[$cluster]=$(meta "$BASE_DIR/$id" START_WAL)
	done
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	for dir in $("${DB_EXEC[@]}" sh -c 'ls "$0" 2>/dev/null || true' "$WAL_ARCHIVE_DIR"); do
		[[ $dir =~ ^[0-9]+$ ]] || continue
		if [[ -n ${oldest_wal[$dir]:-} ]]; then
			"${DB_EXEC[@]}" pg_archivecleanup -x .gz "$WAL_ARCHIVE_DIR/$dir" "${oldest_wal[$dir]}"
		elif [[ $dir != "$live" ]]; then
			"${DB_EXEC[@]}" rm -rf "${WAL_ARCHIVE_DIR:?}/$dir"
			log "retention: deleted the WAL archive of cluster $dir (no base backup of it is left)"
		fi
	done
	log "retention: the WAL archive keeps what the kept base backups need"
}

# push_wal_off_host ENV ID: base backup ID and the whole WAL archive (one tar) into the restic
# repository, when one is configured.
push_wal_off_host() {
	[[ -n ${BACKUP_RESTIC_REPOSITORY:-} ]] || return 0
	BACKUP_DIR=$BASE_DIR push_off_host "$1" "$2"
	"${DB_EXEC[@]}" tar -C "$WAL_ARCHIVE_DIR" -cf - . |
		restic backup --quiet --tag "$1" --tag wal --stdin --stdin-filename wal-archive.tar ||
		die "the off-host copy of the WAL archive failed (base backup $2 is complete)"
	log "off-host copy of the WAL archive in the restic repository"
}
