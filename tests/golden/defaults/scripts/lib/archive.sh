# shellcheck shell=bash
# PostgreSQL's part of point-in-time recovery (lib/pitr.sh): the server archives each finished WAL
# segment itself (config/db/archive-wal.sh), a base backup is pg_basebackup's tar, and a recovery
# is the server's own, up to recovery_target_time. Sourced by lib/pitr.sh, never run.

PGDATA_DIR=/var/lib/postgresql/data
# An archive directory per cluster: its system identifier. The meta.env key of the first WAL
# segment a base backup needs, and the base backup's file.
# shellcheck disable=SC2034  # read by lib/pitr.sh and the scripts
{
	ARCHIVE_CLUSTER_RE='^[0-9]+$'
	ARCHIVE_START_KEY=START_WAL
	BASE_FILE=base.tar.gz
}

# archive_check ENV: dies unless the live server archives its WAL.
archive_check() {
	[[ $(db_psql postgres -At -c "SHOW archive_mode") == on ]] ||
		die "the $1 database does not archive its WAL: recreate it with scripts/compose.sh $1 up -d --wait db"
}

# archive_cluster: the live cluster's system identifier.
archive_cluster() { db_psql postgres -At -c "SELECT system_identifier FROM pg_control_system()"; }

# archive_start: a segment at or before a base backup's own start: the archive keeps everything from there.
archive_start() { db_psql postgres -At -c "SELECT pg_walfile_name(pg_current_wal_lsn())"; }

# archive_base: the base backup (tar) on stdout, as the backup role (replication, over the socket
# only); the WAL it needs is in the tar.
archive_base() {
	"${DB_EXEC[@]}" pg_basebackup -U "$DB_BACKUP_USER" --no-password -D - -F tar -X fetch --checkpoint=fast
}

# archive_prune_before DIR SEGMENT: the cluster directory DIR keeps SEGMENT and what follows it.
archive_prune_before() { "${ARCHIVE_EXEC[@]}" pg_archivecleanup -x .gz "$1" "$2"; }

# archive_trim_server: nothing: the server recycles a segment once it is archived.
archive_trim_server() { :; }

# pitr_flush ENV: the live server archives the WAL it is writing now (best effort: the database may
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
# (lib/pitr.sh), restores the base backup and replays the archive up to TARGET (epoch seconds) or to
# its end (latest), then ends recovery. Dies on failure. When nothing was committed after TARGET,
# the end of the archive is the state at TARGET: replayed whole.
pitr_recover() {
	local dir=$1 env=$2 target=$3 container=$4 image=$5 cluster settings=() waited=0 fatal
	cluster=$(meta "$dir" SYSTEM_ID)
	settings=(-c archive_mode=off
		-c "restore_command=f=$ARCHIVE_REPLAY_DIR/$cluster/%f.gz; test -f \$f && gzip -dc \$f > %p"
		-c recovery_target_action=promote)
	[[ $target == latest ]] || settings+=(-c "recovery_target_time=$(date -u -d "@$target" '+%Y-%m-%d %H:%M:%S+00')")
	pitr_start_throwaway "$container" "$image" "$env"
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

# archive_dump: the recovered app database (the throwaway's) as plain SQL, without owners or
# privileges (db_grant gives them to the restored copy).
archive_dump() { "${DB_EXEC[@]}" pg_dump -U "$DB_USER" -d "$DB_NAME" --no-owner --no-privileges; }
