#!/bin/sh
# Golden Node: MariaDB's users, each with what it needs and no more. The db-roles one-off
# service runs this at every `up` and every deploy (scripts/deploy.sh, scripts/db-roles.sh): it
# is idempotent, and an existing database gets the users the first time.
#   root          administers: scripts only (restore, this file)
#   app           the image's user, ALL on the app's database: migrations
#   app_user      the app: reads and writes rows; no DDL, no users, no FILE
#   app_exporter  mysqld_exporter: PROCESS, REPLICATION CLIENT, SLAVE MONITOR, performance_schema
#   app_backup    scripts/backup.sh: reads the app's database; scripts/base-backup.sh: RELOAD,
#                 PROCESS, LOCK TABLES, BINLOG MONITOR for mariadb-backup (it reads the files
#                 itself, in the db container); from the container itself, and from the network
#                 (the backup's dump client, db-backup) with the dump's read-only grants only
#   app_archive   db-archive: REPLICATION SLAVE and BINLOG MONITOR (streams the binary log), reads
#                 mysql.pitr_cluster (the cluster id this file writes once per data directory)
# Passwords are read from the secret files into the SQL on standard input, never a command line.
set -eu
# quoted FILE: the file's first line as an SQL string literal.
quoted() { printf "'%s'" "$(head -n 1 "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"; }
MYSQL_PWD=$(cat /run/secrets/db_root_password)
export MYSQL_PWD
# On a cluster nothing orders the start (Compose waits for the db's health check): up to 2 minutes.
tries=0
until mariadb-admin -h db -P 3306 -uroot --silent ping >/dev/null 2>&1; do
	tries=$((tries + 1))
	[ "$tries" -lt 120 ] || { echo "db-roles: the database did not answer within 120 s" >&2; exit 1; }
	sleep 1
done
# The administrator's password is the one the data volume was created with: another file (one
# made again after it was lost, another environment's) is named here, not left to mariadb's words.
if ! refused=$(mariadb -h db -P 3306 -uroot --batch -e 'SELECT 1' 2>&1 >/dev/null); then
	case $refused in
	*"Access denied"*)
		echo "db-roles: the database refuses the password in secrets/<env>/db_root_password: its data volume was created with another one; put back the file it was created with, or set this one in the database (ALTER USER 'root'@'%' IDENTIFIED BY ...), then run scripts/db-roles.sh again" >&2 ;;
	*) echo "$refused" >&2 ;;
	esac
	exit 1
fi
mariadb -h db -P 3306 -uroot --batch <<SQL
CREATE USER IF NOT EXISTS 'app'@'%';
ALTER USER 'app'@'%' IDENTIFIED BY $(quoted /run/secrets/db_password);
GRANT ALL ON \`app\`.* TO 'app'@'%';
CREATE USER IF NOT EXISTS 'app_user'@'%';
ALTER USER 'app_user'@'%' IDENTIFIED BY $(quoted /run/secrets/db_app_password);
GRANT SELECT, INSERT, UPDATE, DELETE ON \`app\`.* TO 'app_user'@'%';
CREATE USER IF NOT EXISTS 'app_exporter'@'%' WITH MAX_USER_CONNECTIONS 3;
ALTER USER 'app_exporter'@'%' IDENTIFIED BY $(quoted /run/secrets/db_exporter_password);
GRANT PROCESS, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO 'app_exporter'@'%';
GRANT SELECT ON performance_schema.* TO 'app_exporter'@'%';
CREATE USER IF NOT EXISTS 'app_backup'@'localhost';
ALTER USER 'app_backup'@'localhost' IDENTIFIED BY $(quoted /run/secrets/db_backup_password);
GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON \`app\`.* TO 'app_backup'@'localhost';
GRANT SELECT ON mysql.proc TO 'app_backup'@'localhost';
GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'app_backup'@'localhost';
CREATE USER IF NOT EXISTS 'app_backup'@'%' WITH MAX_USER_CONNECTIONS 2;
ALTER USER 'app_backup'@'%' IDENTIFIED BY $(quoted /run/secrets/db_backup_password);
-- Exactly the dump's grants: an earlier release's LOCK TABLES (--single-transaction takes no lock) goes.
REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'app_backup'@'%';
GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON \`app\`.* TO 'app_backup'@'%';
GRANT SELECT ON mysql.proc TO 'app_backup'@'%';
CREATE TABLE IF NOT EXISTS mysql.pitr_cluster (id CHAR(32) NOT NULL PRIMARY KEY) ENGINE=InnoDB;
INSERT INTO mysql.pitr_cluster (id) SELECT REPLACE(UUID(), '-', '') FROM DUAL
	WHERE NOT EXISTS (SELECT 1 FROM mysql.pitr_cluster);
CREATE USER IF NOT EXISTS 'app_archive'@'%' WITH MAX_USER_CONNECTIONS 3;
ALTER USER 'app_archive'@'%' IDENTIFIED BY $(quoted /run/secrets/db_archive_password);
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'app_archive'@'%';
GRANT SELECT ON mysql.pitr_cluster TO 'app_archive'@'%';
SQL
echo "db-roles: app, app_user, app_exporter, app_backup and app_archive are in place"
