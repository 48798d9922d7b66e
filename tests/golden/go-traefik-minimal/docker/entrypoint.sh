#!/bin/sh
# Container entrypoint: builds the URLs that carry passwords at container start, so that no
# password sits in an env file, an image layer or `docker inspect`. Then runs the app.
#
# Each password comes from VAR or from the file VAR_FILE names (docker-library's rule; Compose
# sets the *_FILE variables to its secret files); both set is an error:
#   DATABASE_PASSWORD(_FILE) with DATABASE_SCHEME, _USER, _HOST, _PORT, _NAME -> DATABASE_URL
#   REDIS_PASSWORD(_FILE) with REDIS_HOST, REDIS_PORT                         -> REDIS_URL
# A DATABASE_URL or REDIS_URL set by you is used as it is.
set -eu

die() {
	echo "entrypoint: $*" >&2
	exit 1
}

# read_secret FILE: the file's content; refuses characters that would need URL encoding.
read_secret() {
	[ -r "$1" ] || die "cannot read secret file $1 (is it mounted, and readable by group $(id -g)?)"
	value=$(cat "$1")
	check_secret "$value" "secret $1"
	printf '%s' "$value"
}

check_secret() { # VALUE WHAT
	case "$1" in
	"" | *[!A-Za-z0-9._~-]*) die "$2 is empty or has characters other than A-Z a-z 0-9 . _ ~ -: regenerate it" ;;
	esac
}

# password VAR: VAR's value, or the content of the file VAR_FILE names; empty when neither is set.
password() {
	eval "direct=\${$1:-} file=\${$1_FILE:-}"
	[ -z "$direct" ] || [ -z "$file" ] || die "both $1 and $1_FILE are set: set one of them"
	if [ -n "$file" ]; then
		read_secret "$file"
	elif [ -n "$direct" ]; then
		check_secret "$direct" "$1"
		printf '%s' "$direct"
	fi
}

database_password=$(password DATABASE_PASSWORD)
if [ -z "${DATABASE_URL:-}" ] && [ -n "$database_password" ]; then
	DATABASE_URL="${DATABASE_SCHEME}://${DATABASE_USER}:${database_password}@${DATABASE_HOST}:${DATABASE_PORT}/${DATABASE_NAME}"
	export DATABASE_URL
fi

redis_password=$(password REDIS_PASSWORD)
if [ -z "${REDIS_URL:-}" ] && [ -n "$redis_password" ]; then
	REDIS_URL="redis://:${redis_password}@${REDIS_HOST}:${REDIS_PORT}/0"
	export REDIS_URL
fi
unset database_password redis_password DATABASE_PASSWORD REDIS_PASSWORD

exec "$@"
