# shellcheck shell=bash
# Database operations for mariadb, shared by backup.sh, restore.sh, verify-backup.sh and
# migrate.sh. Every function runs the database's own client inside a container: DB_EXEC is the
# command prefix, set by db_use_service (the environment's db) or db_use_container (a throwaway).
# Sourced after lib/common.sh, never run.

# shellcheck disable=SC2034  # DB_ENGINE is read by the scripts that source this
DB_ENGINE=mariadb
DB_NAME=app
# The administrator (restore, role setup) and the read-only backup role (config/db/roles.sh).
DB_USER=root
DB_BACKUP_USER=app_backup
# A throwaway copy of the db service (verify-backup.sh): its user, hardening, limits and settings,
# an anonymous volume, no network; DB_SECRETS are the secret files it reads (mounted per environment).
DB_THROWAWAY_ARGS=(--user=999:999 --group-add=10001 --read-only --cap-drop=ALL --security-opt=no-new-privileges:true --network=none --pids-limit=512 --cpus=1 --memory=1024m --tmpfs=/tmp --tmpfs=/run/mysqld --volume=/var/lib/mysql --env=MARIADB_USER=app --env=MARIADB_DATABASE=app --env=MARIADB_PASSWORD_FILE=/run/secrets/db_password --env=MARIADB_ROOT_PASSWORD_FILE=/run/secrets/db_root_password --env=MARIADB_AUTO_UPGRADE=1)
DB_SECRETS=(db_root_password db_password db_backup_password)
# Where the backup's dump runs (db_dump_counted): empty, where DB_EXEC runs (the db container, on its
# socket); on Compose, in the one-off db-backup client (db_use_service). DB_DUMP_CONNECTION:
# the dump's options to reach the server over the network, empty on the socket.
DB_DUMP_EXEC=()
DB_DUMP_CONNECTION=()

db_use_service() { # ENV
	if [[ $(deploy_target "$1") == swarm ]]; then
		# shellcheck source=swarm.sh
		source "$PROJECT_ROOT/scripts/lib/swarm.sh"
		swarm_db_exec "$1"
		return 0
	fi
	if [[ $(deploy_target "$1") == kubernetes ]]; then
		# shellcheck source=kubernetes.sh
		source "$PROJECT_ROOT/scripts/lib/kubernetes.sh"
		kubernetes_init "$1"
		kubernetes_db_exec "$1"
		return 0
	fi
	compose_cmd "$1"
	DB_EXEC=("${COMPOSE[@]}" exec -T db)
	DB_DUMP_EXEC=("${COMPOSE[@]}" run --rm -T --no-deps db-backup)
	DB_DUMP_CONNECTION=(--host=db --port=3306)
}

# db_app_stop ENV, db_app_start ENV: the app's replicas stop while its database is swapped
# (scripts/restore.sh), then start again and are healthy; db_app_start fails otherwise.
db_app_stop() {
	if [[ $(deploy_target "$1") == swarm ]]; then
		DB_APP_REPLICAS=$("${SWARM[@]}" service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_app")
		"${SWARM[@]}" service scale --detach "${STACK}_app=0" >/dev/null 2>&1 || true
		return 0
	fi
	if [[ $(deploy_target "$1") == kubernetes ]]; then
		# At 0 replicas the autoscaler leaves the Deployment alone until it is scaled up again.
		DB_APP_REPLICAS=$("${KUBECTL[@]}" --namespace "$NAMESPACE" get deployment app --output 'jsonpath={.spec.replicas}')
		"${KUBECTL[@]}" --namespace "$NAMESPACE" scale deployment/app --replicas 0 >/dev/null
		"${KUBECTL[@]}" --namespace "$NAMESPACE" wait --for=delete pod --selector app.kubernetes.io/component=app --timeout 120s >/dev/null 2>&1 || true
		return 0
	fi
	compose_cmd "$1"
	"${COMPOSE[@]}" stop "${APP_SERVICES[@]}" >/dev/null 2>&1 || true
}

db_app_start() {
	if [[ $(deploy_target "$1") == swarm ]]; then
		"${SWARM[@]}" service scale --detach=false "${STACK}_app=${DB_APP_REPLICAS:-1}" >/dev/null 2>&1
		return
	fi
	if [[ $(deploy_target "$1") == kubernetes ]]; then
		"${KUBECTL[@]}" --namespace "$NAMESPACE" scale deployment/app --replicas "${DB_APP_REPLICAS:-1}" >/dev/null &&
			"${KUBECTL[@]}" --namespace "$NAMESPACE" rollout status deployment/app --timeout 300s >/dev/null
		return
	fi
	compose_cmd "$1"
	"${COMPOSE[@]}" up --detach --no-deps --wait "${APP_SERVICES[@]}" >/dev/null 2>&1
}

# db_image ENV: DB_IMAGE, the database image ENV's compose files run (for its throwaway copies).
db_image() {
	compose_cmd "$1"
	DB_IMAGE=$("${COMPOSE[@]}" config --images db 2>/dev/null) && [[ -n $DB_IMAGE ]] ||
		die "cannot read the database image of $1 from its compose files"
}

db_use_container() { # NAME
	DB_EXEC=(docker exec -i "$1")
}

# db_secret_mounts ENV: DB_SECRET_MOUNTS, the `docker run` options that mount ENV's secret files
# where the db service reads them (for its throwaway copies); dies if one is missing.
db_secret_mounts() {
	local name
	DB_SECRET_MOUNTS=()
	for name in "${DB_SECRETS[@]}"; do
		[[ -r $PROJECT_ROOT/secrets/$1/$name ]] || die "secrets/$1/$name is missing: run scripts/init-env.sh $1"
		DB_SECRET_MOUNTS+=("--volume=$PROJECT_ROOT/secrets/$1/$name:/run/secrets/$name:ro")
	done
}

# Who db_sql is: root on the socket, its password in DB_PASSWORD_FILE where DB_EXEC runs
# (MARIADB_ROOT_PASSWORD wins where it is set: a throwaway server); db_use_network changes both.
DB_SQL_LOGIN=(-uroot)
DB_PASSWORD_FILE=/run/secrets/db_root_password

# db_root CMD...: runs CMD where DB_EXEC runs with that password in MYSQL_PWD (from the file, or
# MARIADB_ROOT_PASSWORD), never on a command line.
db_root() {
	# shellcheck disable=SC2016  # expanded by the shell inside the container; $0 is the file
	"${DB_EXEC[@]}" sh -c 'MYSQL_PWD="${MARIADB_ROOT_PASSWORD:-$(cat "$0")}" exec "$@"' "$DB_PASSWORD_FILE" "$@"
}

# db_sql DB ARGS...: the mariadb client as DB_SQL_LOGIN (root on the socket).
db_sql() {
	local db=$1
	shift
	db_root mariadb "${DB_SQL_LOGIN[@]}" --batch --skip-column-names "$db" "$@"
}

# db_dump_counted WORK: a consistent plain-SQL dump (InnoDB snapshot), gzipped on stdout;
# WORK/counts.tsv, the rows the dump holds per table, counted as it streams by; WORK/schema_version.
# On failure, returns 1 with the reason in WORK/.dump-error. The dump, its counter and gzip run in
# one container (DB_DUMP_PIPELINE): only the compressed dump crosses Docker's output stream, the
# counts come back on stderr. Multi-row INSERTs, each committed on its own when loaded (a whole
# table in one transaction would hold its binary log cache until the end); no USE statement, so
# it loads into any database. As the backup user (reads the app's database, changes nothing).
db_dump_counted() {
	local work=$1 status=0 exec=("${DB_EXEC[@]}")
	[[ -z ${DB_DUMP_EXEC[*]:-} ]] || exec=("${DB_DUMP_EXEC[@]}")
	db_schema_version "$DB_NAME" >"$work/schema_version"
	"${exec[@]}" bash -c "$DB_DUMP_PIPELINE" db-dump "$DB_DUMP_COUNTER" "$DB_DUMP_TRAILER" \
		mariadb-dump "${DB_DUMP_CONNECTION[@]}" -u"$DB_BACKUP_USER" --single-transaction --quick --routines --triggers --events "$DB_NAME" \
		2>"$work/.dump-log" || status=$?
	sed -n 's/^dp-rows\t//p' "$work/.dump-log" | LC_ALL=C sort >"$work/counts.tsv"
	case $status in
	0) rm -f "$work/.dump-log" && return 0 ;;
	3) echo "the dump is incomplete (it does not end with '$DB_DUMP_TRAILER')" ;;
	*) echo "mariadb-dump failed: $(grep -v '^dp-rows' "$work/.dump-log" | tail -n 1)" ;;
	esac >"$work/.dump-error"
	return 1
}

# The dump's pipeline, run with `bash -c` in the dump's container: $1 is the row counter
# (DB_DUMP_COUNTER), $2 the trailer, the rest the dump command, which reads the backup user's
# password from its secret file. The gzipped dump on stdout; on stderr the dump's errors and a line
# "dp-rows<TAB>TABLE<TAB>ROWS" per table. Exits 1 when the dump or gzip fails, 3 when the dump
# lacks the trailer.
# shellcheck disable=SC2016  # expanded by bash inside the container
DB_DUMP_PIPELINE='set -o pipefail
counter=$1 trailer=$2
shift 2
rows=$(mktemp -u /tmp/dump-rows.XXXXXX)
mkfifo -m 600 "$rows"
trap "rm -f \"\$rows\"" EXIT
awk -v trailer="$trailer" -v prefix="dp-rows\t" "$counter" <"$rows" >&2 &
counting=$!
MYSQL_PWD=$(cat /run/secrets/db_backup_password) "$@" | tee "$rows" | gzip -6 || exit 1
wait "$counting" || exit 3'

# The dump trailer mariadb-dump writes last: a dump without it is incomplete.
DB_DUMP_TRAILER='-- Dump completed'

# DB_DUMP_COUNTER: an awk program that reads a plain dump, writes "PREFIXtable<TAB>rows" for every
# table it creates (-v prefix=...) and exits 3 unless the dump ends with the trailer (-v trailer=...).
# An INSERT's rows are the tuples "(...)" outside string literals: recent mariadb-dump versions
# write one per line after a line "INSERT INTO `t` VALUES" (a line without "),(" holds one row and
# is not parsed), older ones all on the INSERT's line. A literal ends at a quote not escaped by an odd number of backslashes (a
# doubled quote ends and restarts it, which counts the same).
# shellcheck disable=SC2016  # an awk program: awk's fields, not the shell's
DB_DUMP_COUNTER='
	function tuples(s,    n, part, i, inside, count) {
		n = split(s, part, "\047")
		for (i = 1; i <= n; i++) {
			if (!inside) count += gsub(/\(/, "", part[i])
			else if (part[i] ~ /(^|[^\\])(\\\\)*\\$/) continue
			inside = !inside
		}
		return count
	}
	/^CREATE TABLE `/ { t = substr($0, 15); t = substr(t, 1, index(t, "` (") - 1); gsub(/``/, "`", t); rows[t] += 0; next }
	/^INSERT INTO `/ {
		end = index($0, "` VALUES")
		t = substr($0, 14, end - 14); gsub(/``/, "`", t)
		rest = substr($0, end + 8)
		rows[t] += tuples(rest)
		values = rest !~ /;$/
		next
	}
	values {
		rows[t] += index($0, "),(") ? tuples($0) : 1
		if (/;$/) values = 0
		next
	}
	index($0, trailer) == 1 { complete = 1 }
	END {
		for (t in rows) printf "%s%s\t%d\n", prefix, t, rows[t]
		if (!complete) exit 3
	}'

# count_dump_rows: the same count of a plain dump on stdin, sorted "table<TAB>rows" lines; exits 3
# unless it ends with the trailer.
count_dump_rows() { awk -v trailer="$DB_DUMP_TRAILER" -v prefix= "$DB_DUMP_COUNTER" | LC_ALL=C sort; }

db_load() { db_sql "$1"; }
# db_grant DB: nothing to do: privileges are on the database's name, which restored tables take.
db_grant() { :; }
db_create() { db_sql mysql -e "CREATE DATABASE \`$1\`"; }
db_drop() { db_sql mysql -e "DROP DATABASE IF EXISTS \`$1\`"; }
db_exists() { [[ -n $(db_sql mysql -e "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '$1'") ]]; }

db_counts() {
	local table
	for table in $(db_sql "$1" -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$1' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"); do
		printf '%s\t%s\n' "$table" "$(db_sql "$1" -e "SELECT COUNT(*) FROM \`$table\`")"
	done
}

db_schema_version() {
	local version
	version=$(db_sql "$1" -e "SELECT COALESCE(MAX(version), 'none') FROM schema_migrations" 2>/dev/null) || version=none
	echo "${version:-none}"
}

# db_swap NEW OLD: one atomic RENAME TABLE moves the current tables to OLD and NEW's into place.
db_swap() {
	local renames=() table
	db_create "$2"
	for table in $(db_sql mysql -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$DB_NAME'"); do
		renames+=("\`$DB_NAME\`.\`$table\` TO \`$2\`.\`$table\`")
	done
	for table in $(db_sql mysql -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$1'"); do
		renames+=("\`$1\`.\`$table\` TO \`$DB_NAME\`.\`$table\`")
	done
	[[ -z ${renames[*]:-} ]] || db_sql mysql -e "RENAME TABLE $(IFS=,; echo "${renames[*]}")"
	db_sql mysql -e "DROP DATABASE \`$1\`"
}

# db_use_network: the dump runs here and reaches the db service over the network as the backup
# role, with its password (/run/secrets/db_backup_password); so does db_sql, which only reads
# the schema version there (Kubernetes' backup CronJob: it holds no other password).
db_use_network() {
	DB_EXEC=()
	DB_DUMP_CONNECTION=(--host=db --port=3306)
	DB_SQL_LOGIN=(--host=db --port=3306 -u"$DB_BACKUP_USER")
	DB_PASSWORD_FILE=/run/secrets/db_backup_password
}

# db_start_local: a throwaway server of this image in this container (its own entrypoint, data in
# the image's data directory, loopback only), root with a password only this process knows; the
# tools run here on its socket (Kubernetes' backup verification CronJob). It ends with the pod.
db_start_local() {
	DB_EXEC=()
	MARIADB_ROOT_PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
	export MARIADB_ROOT_PASSWORD
	bash /usr/local/bin/docker-entrypoint.sh mariadbd --bind-address=127.0.0.1 >/tmp/db-server.log 2>&1 &
}

# db_wait_ready: the final server accepts connections. Over TCP on loopback: the image's
# temporary server, which runs while it initialises, has networking off.
db_wait_ready() {
	local _
	for _ in $(seq 90); do
		db_root mariadb -uroot --protocol=tcp -h 127.0.0.1 -e 'SELECT 1' >/dev/null 2>&1 && return 0
		sleep 1
	done
	return 1
}
