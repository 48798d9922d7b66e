#!/usr/bin/env bash
# Replaces one secret of an environment and brings everything that uses it along, without
# stopping the service.
#   scripts/rotate-secret.sh ENV NAME [--from FILE]
# NAME is a file of secrets/ENV/; the new value is random, or FILE's first line (--from: needed
# for a value only you have, e.g. the alert webhook URL). In order:
# 1. The current value is kept in secrets/ENV/.rotated/NAME.TIME (0600): the way back.
# 2. The file gets the new value in place (a container that reads it when it needs it, such as the
#    database's backups, sees it at once); a file made from it (a web.config.file) is made again.
#    The cache, for its password, accepts the old and the new one until step 5.
# 3. The app, if it reads NAME, starts in fresh containers of the other colour while the database
#    learns the new password (a role's, through db-roles); the proxy switches to them once they are
#    healthy and the colour that served stops, whatever the strategy (it holds the old value; a
#    blue-green rollback then starts the earlier release again instead of switching back).
#    Without the app: the database learns the password alone.
# 4. The running services that read NAME when they start are recreated (exporters, Prometheus,
#    Grafana).
# 5. The cache forgets the old password.
# If step 3 fails, the old value is put back (file and database) and nothing else changed; later
# failures say what was done. PostgreSQL and MariaDB keep one password per role: between the
# database's change and the switch, an old replica that opens a new connection is refused
# (docs/security.md, "Rotating secrets"). One rotation, deploy or rollback per environment at a time.
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/release.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/release.sh"
# shellcheck source=lib/secrets.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/secrets.sh"

rotation_args "$@"
on_target "$ROTATE_ENV" "$@"
env=$ROTATE_ENV name=$ROTATE_NAME
file=$PROJECT_ROOT/secrets/$env/$name
rotation_new_value
new=$ROTATE_NEW
proxy_requirements
release_init "$env"
old=$(head -n 1 "$file")
rotation_stash
stash=$ROTATE_STASH
log "rotating secrets/$env/$name (the old value is kept in ${stash#"$PROJECT_ROOT/"})"
# What runs: a service left stopped (or one of a profile not started) reads the file when it starts.
running=" $("${COMPOSE[@]}" ps --services --status running | tr '\n' ' ') "
# cache_live: the cache runs, so it must learn the new password (else it reads the file at start).
cache_live() { [[ ${ROTATE_SERVER[$name]:-} == cache && $running == *" cache "* ]]; }

# write_in_place VALUE: the file keeps its inode, mode and group: the containers that mount it see
# the new content.
write_in_place() { printf '%s' "$1" >"$file"; }

# cache_password OP VALUE: the cache's default user gains (>) or loses (<) a password; the command
# goes on standard input (no password on a command line), authenticated with the file's value.
cache_password() {
	# shellcheck disable=SC2016  # expanded in the cache container
	"${COMPOSE[@]}" exec -T cache sh -c 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli' \
		<<<"ACL SETUSER default \"$1${2//\"/\\\"}\"" | grep -qx OK
}

# server_step: the database learns the value now in the file.
server_step() {
	[[ ${ROTATE_SERVER[$name]:-} == db-roles ]] || return 0
	log "the database's role gets the new password (db-roles)"
	ensure_db_roles "$env"
}

# undo: the old value back, in the file and in the database (once: also on an unexpected exit
# between the new value's writing and the switch).
state=unchanged
undo() {
	[[ $state == written ]] || return 0
	state=undone
	log "putting the old value of $name back"
	write_in_place "$old"
	[[ -z ${ROTATE_REMAKE[$name]:-} ]] || ensure_web_config "$env" "${ROTATE_REMAKE[$name]}"
	[[ ${ROTATE_SERVER[$name]:-} != db-roles ]] || ensure_db_roles "$env" ||
		log "warning: the database's role could not get the old password back: run scripts/db-roles.sh $env"
	! cache_live || cache_password '<' "$new" ||
		log "warning: the cache still accepts the new password as well"
	return 0
}

if cache_live; then
	cache_password '>' "$new" || die "the cache did not accept a second password (scripts/compose.sh $env ps cache); nothing changed"
fi
trap undo EXIT
state=written
write_in_place "$new"
[[ -z ${ROTATE_REMAKE[$name]:-} ]] || ensure_web_config "$env" "${ROTATE_REMAKE[$name]}"

version=$(current_version)
if is_one_of "$name" "${ROTATE_APP[@]}" && [[ -n $version && -n $(app_containers) ]]; then
	refresh_app "$version" server_step undo ||
		die "rotation of $name stopped: the app did not start with the new value; the old value is back (users are still served)"
else
	server_step || { undo; die "rotation of $name stopped: the database did not take the new password; the old value is back"; }
fi
# The app and the database have the new value: from here on, a failure leaves it in place.
state=rotated

for service in ${ROTATE_RESTART[$name]:-}; do
	[[ $running == *" $service "* ]] || continue
	log "recreating $service (it reads $name when it starts)"
	"${COMPOSE[@]}" up --detach --no-deps --force-recreate --wait "$service" >/dev/null 2>&1 ||
		die "$name is rotated, but $service did not become healthy again (scripts/compose.sh $env ps $service)"
done
if cache_live; then
	cache_password '<' "$old" || die "$name is rotated, but the cache still accepts the old password as well"
fi
log "rotated secrets/$env/$name"
