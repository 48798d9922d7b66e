#!/usr/bin/env bash
# Replaces one secret of an environment on a Docker Swarm (scripts/rotate-secret.sh hands over to
# this script when env/ENV.env says DEPLOY_TARGET=swarm). docs/swarm.md.
#   scripts/rotate-secret.sh ENV NAME [--from FILE]
# The current value is kept in secrets/ENV/.rotated/NAME.TIME (0600), the file gets the new value,
# and the serving version is deployed again (scripts/deploy.sh, with its backup): a Swarm secret is
# named by its content, so every service that reads NAME is updated (the app one task at a time,
# each new task healthy before an old one stops) and the db-roles job gives a database role its
# new password. The app's update and that job run side by side: until the job is done, a new task
# that opens a database connection is refused (docs/swarm.md). If the deploy fails, the old value
# is put back and deployed again. A secret the database service reads restarts its task: a short
# outage, said before anything changes.
set -Eeuo pipefail
here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/secrets.sh
source "$here/../lib/secrets.sh"

rotation_args "$@"
env=$ROTATE_ENV name=$ROTATE_NAME
rotation_new_value
new=$ROTATE_NEW
version=$(env_value "$env" APP_VERSION)
[[ -n $version ]] ||
	die "$env has no deployed version yet: write secrets/$env/$name yourself, the first deploy (scripts/deploy.sh $env VERSION) uses it"
rotation_stash
stash=$ROTATE_STASH
log "rotating secrets/$env/$name on the $env Swarm (the old value is kept in ${stash#"$PROJECT_ROOT/"})"
if is_one_of "$name" "${ROTATE_SWARM_DB[@]}"; then
	log "warning: the database service reads $name: its task restarts (a short outage)"
fi

# put VALUE_FILE: the secret file (and a file made from it) from VALUE_FILE.
put() {
	write_secret "$env" "$name" <"$1"
	[[ -z ${ROTATE_REMAKE[$name]:-} ]] || ensure_web_config "$env" "${ROTATE_REMAKE[$name]}"
}

put <(printf '%s' "$new")
if ! "$PROJECT_ROOT/scripts/deploy.sh" "$env" "$version"; then
	log "putting the old value of $name back and deploying $version with it"
	put "$stash"
	"$PROJECT_ROOT/scripts/deploy.sh" "$env" "$version" ||
		die "rotation of $name failed, and so did the deploy with the old value: see above (docker stack ps)"
	die "rotation of $name failed: the old value is back and deployed (see above)"
fi
log "rotated secrets/$env/$name"
