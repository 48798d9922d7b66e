# shellcheck shell=bash
# MariaDB's part of point-in-time recovery (lib/pitr.sh): the db-archive service streams the binary
# log as the server writes it (config/db/archive-binlog.sh), a base backup is mariadb-backup's
# stream of the data directory, and a recovery prepares it and replays the binary log from the
# position the backup recorded, up to a time. Sourced by lib/pitr.sh, never run.

DATA_DIR=/var/lib/mysql
# An archive directory per cluster: the id config/db/roles.sh writes once per data directory. The
# meta.env key of the first binary log file a base backup needs, and the base backup's file.
# shellcheck disable=SC2034  # read by lib/pitr.sh and the scripts
{
	ARCHIVE_CLUSTER_RE='^[0-9a-f]{32}$'
	ARCHIVE_START_KEY=START_BINLOG
	BASE_FILE=base.xbstream.gz
}

# archive_check ENV: dies unless the live server writes a binary log and db-archive streams it.
archive_check() {
	[[ $(db_sql mysql -e "SELECT @@log_bin") == 1 ]] ||
		die "the $1 database writes no binary log: recreate it with scripts/compose.sh $1 up -d --wait db"
	[[ -n $(archive_cluster) ]] || die "the $1 database has no cluster id yet: run scripts/db-roles.sh $1"
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	"${ARCHIVE_EXEC[@]}" sh -c 'kill -0 "$(cat /tmp/mariadb-binlog.pid)"' 2>/dev/null ||
		die "the binary log archiver of $1 is not streaming: see scripts/compose.sh $1 logs db-archive"
}

# archive_cluster: the live cluster's id.
archive_cluster() { db_sql mysql -e "SELECT id FROM mysql.pitr_cluster" 2>/dev/null || true; }

# archive_start: the binary log file the server writes now: a base backup starts in it or later.
archive_start() { db_sql mysql -e "SHOW MASTER STATUS" | cut -f 1; }

# archive_base: mariadb-backup's stream (xbstream) of the live data directory on stdout, as the
# backup user over the socket; it records the binary log position it is consistent with.
archive_base() {
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	"${DB_EXEC[@]}" sh -c 'MYSQL_PWD="$(cat /run/secrets/db_backup_password)" "$@" 2>/tmp/base-backup.log || {
		tail -n 3 /tmp/base-backup.log >&2; exit 1; }' db-backup \
		mariadb-backup --backup --stream=xbstream --user="$DB_BACKUP_USER" --target-dir=/tmp
}

# archive_prune_before DIR FILE: the cluster directory DIR keeps FILE and what follows it.
archive_prune_before() {
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	"${ARCHIVE_EXEC[@]}" sh -c 'cd "$0" && for f in binlog.[0-9]*; do if expr "$f" \< "$1" >/dev/null; then rm -f "$f"; fi; done' "$1" "$2"
}

# archive_trim_server: the server deletes the binary log files db-archive has whole (those before
# the one it streams now).
archive_trim_server() {
	local live newest
	live=$(archive_cluster)
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	newest=$("${ARCHIVE_EXEC[@]}" sh -c 'ls "$0" 2>/dev/null | grep -E "^binlog\.[0-9]+$" | tail -n 1' "$ARCHIVE_DIR/$live") || return 0
	[[ -n $newest ]] || return 0
	db_sql mysql -e "PURGE BINARY LOGS TO '$newest'"
	log "retention: the server keeps its binary log from $newest on (the older files are archived)"
}

# pitr_flush ENV: waits until db-archive has what the server has written so far (best effort: the
# database may be a new, empty one after its volume was lost, and then has nothing of the old one's).
pitr_flush() {
	local cluster file position size _
	db_use_service "$1"
	cluster=$(archive_cluster)
	read -r file position _ < <(db_sql mysql -e "SHOW MASTER STATUS" 2>/dev/null) || return 0
	[[ -n $cluster && -n ${file:-} ]] || return 0
	for _ in $(seq 30); do
		size=$("${ARCHIVE_EXEC[@]}" stat -c %s "$ARCHIVE_DIR/$cluster/$file" 2>/dev/null) || size=0
		((size >= position)) && return 0
		sleep 1
	done
	log "warning: db-archive has not caught up with $file:$position after 30 s: the last seconds may be missing"
}

# pitr_recover BASE_DIR ENV TARGET CONTAINER IMAGE: CONTAINER, a throwaway copy of the db service
# (lib/pitr.sh), prepares the base backup, starts on it and replays the archived binary log from
# the backup's position, up to TARGET (epoch seconds: the events before that second) or to its
# end (latest). Dies on failure.
pitr_recover() {
	local dir=$1 env=$2 target=$3 container=$4 image=$5 cluster file position stop=() files=()
	cluster=$(meta "$dir" SYSTEM_ID)
	pitr_start_throwaway "$container" "$image" "$env"
	open_backup "$dir" "$env" | docker exec -i "$container" mbstream -x -C "$DATA_DIR" ||
		die "cannot unpack base backup $(basename "$dir")"
	docker exec "$container" mariadb-backup --prepare --target-dir="$DATA_DIR" >/dev/null 2>&1 ||
		die "mariadb-backup --prepare failed on base backup $(basename "$dir")"
	read -r file position _ < <(docker exec "$container" cat "$DATA_DIR/xtrabackup_binlog_info") ||
		die "base backup $(basename "$dir") has no binary log position"
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	docker exec --detach "$container" sh -c 'exec mariadbd --skip-log-bin --datadir="$0" >/tmp/recovery.log 2>&1' "$DATA_DIR"
	db_use_container "$container"
	db_wait_ready || die "the recovered server did not start: see /tmp/recovery.log in $container"
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	mapfile -t files < <(docker exec "$container" sh -c 'ls "$0" | grep -E "^binlog\.[0-9]+$" | awk -v first="$1" "\$0 >= first"' \
		"$ARCHIVE_REPLAY_DIR/$cluster" "$file")
	[[ ${files[0]:-} == "$file" ]] || die "the archive of cluster $cluster lacks $file, where base backup $(basename "$dir") starts"
	[[ $target == latest ]] || stop=("--stop-datetime=$(date -u -d "@$target" '+%Y-%m-%d %H:%M:%S')")
	# The time of the last event replayed goes to /tmp/reached (pitr_reached).
	# shellcheck disable=SC2016  # expanded by the shell inside the container
	timeout "$PITR_TIMEOUT" "${DB_EXEC[@]}" bash -c 'set -o pipefail && MYSQL_PWD="$(cat /run/secrets/db_root_password)" &&
		export MYSQL_PWD && cd "$0" && TZ=UTC mariadb-binlog "$@" |
		awk "/^#[0-9][0-9][0-9][0-9][0-9][0-9] .* server id / { last = \$1 \" \" \$2 } { print } END { print last > \"/tmp/reached\" }" |
		mariadb -uroot --binary-mode' "$ARCHIVE_REPLAY_DIR/$cluster" --start-position="$position" "${stop[@]}" "${files[@]}" ||
		die "replaying the binary log of cluster $cluster failed (or took longer than PITR_TIMEOUT=$PITR_TIMEOUT s)"
}

# pitr_reached: the time of the last event the recovered database replayed (UTC), or the base
# backup's end when the archive had none after it.
pitr_reached() {
	local day time
	read -r day time < <("${DB_EXEC[@]}" cat /tmp/reached 2>/dev/null) || true
	if [[ ${day:-} =~ ^#([0-9]{2})([0-9]{2})([0-9]{2})$ && ${time:-} =~ ^([0-9]{1,2}):([0-9]{2}):([0-9]{2})$ ]]; then
		printf '20%s-%s-%sT%02d:%s:%sZ\n' "${day:1:2}" "${day:3:2}" "${day:5:2}" "$((10#${BASH_REMATCH[1]}))" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
	else
		echo "the base backup's end"
	fi
}

# archive_dump: the recovered app database (the throwaway's) as plain SQL, without a USE statement.
archive_dump() {
	db_root mariadb-dump -uroot --single-transaction --quick --routines --triggers --events "$DB_NAME"
}
