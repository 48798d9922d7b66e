#!/bin/sh
# The db-archive service (compose.yaml): streams the server's binary log, as it is written, into
# its volume, a directory per cluster (the id config/db/roles.sh writes once per data directory):
# a server made anew after a lost volume starts its file names from the beginning again, and must
# not overwrite the old cluster's. After any interruption it reconnects, and fetches its newest
# file again whole (or starts at the server's oldest). As app_archive: replication rights only.
set -eu
archive=/var/lib/mysql
MYSQL_PWD=$(cat /run/secrets/db_archive_password)
export MYSQL_PWD
# A replica's id, unique among the server's replicas (the server's own is 1).
replica_id=${DB_ARCHIVE_SERVER_ID:-4242}
pid=""
# Not streaming since (its mtime): the health check passes while it reconnects for up to 2 minutes
# (the server restarting, recreated after a lost volume); BinlogArchiverDisconnected watches longer.
touch /tmp/reconnecting

client() { mariadb -h db -P 3306 -uapp_archive --batch --skip-column-names "$@"; }

# On stop, the server's end of the stream is ended too: an idle server notices a vanished replica
# only when it next sends, and until then lists the connection (BinlogArchiverDisconnected would
# stay quiet). A user may end its own connections; the lookup gives up after 2 s.
stop() {
	[ -z "$pid" ] || kill "$pid" 2>/dev/null
	for id in $(client --connect-timeout=2 -e "SELECT id FROM information_schema.processlist WHERE command = 'Binlog Dump' AND user = 'app_archive'" 2>/dev/null); do
		client --connect-timeout=2 -e "KILL CONNECTION $id" 2>/dev/null || true
	done
	exit 0
}
trap stop TERM INT

while :; do
	cluster=$(client -e "SELECT id FROM mysql.pitr_cluster" 2>/dev/null || true)
	oldest=$(client -e "SHOW BINARY LOGS" 2>/dev/null | head -n 1 | cut -f 1 || true)
	if [ -n "$cluster" ] && [ -n "$oldest" ]; then
		dir=$archive/$cluster
		mkdir -p "$dir"
		# Names sort by their number (binlog.000001, ...): the glob's order.
		newest=""
		for file in "$dir"/binlog.[0-9]*; do
			[ ! -e "$file" ] || newest=${file##*/}
		done
		start=${newest:-$oldest}
		if expr "$start" \< "$oldest" >/dev/null; then
			echo "db-archive: the server no longer has $start..$oldest: the archive has a gap before $oldest" >&2
			start=$oldest
		fi
		echo "db-archive: cluster $cluster, streaming from $start"
		mariadb-binlog --read-from-remote-server --host=db --port=3306 --user=app_archive \
			--raw --stop-never --stop-never-slave-server-id="$replica_id" --result-file="$dir/" "$start" &
		pid=$!
		echo "$pid" >/tmp/mariadb-binlog.pid
		rm -f /tmp/reconnecting
		wait "$pid" || echo "db-archive: the stream ended (the server restarted?): reconnecting" >&2
		touch /tmp/reconnecting
		rm -f /tmp/mariadb-binlog.pid
		pid=""
	fi
	sleep 1
done
