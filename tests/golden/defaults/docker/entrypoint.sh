#!/bin/sh
# Container entrypoint: builds the URLs that carry passwords from secret files at start, so
# that no password sits in an env file, an image layer or `docker inspect`. Then runs the app.
set -eu

die() {
	echo "entrypoint: $*" >&2
	exit 1
}

# read_secret FILE: the file's content; refuses characters that would need URL encoding.
read_secret() {
	[ -r "$1" ] || die "cannot read secret file $1 (is it mounted, and readable by group $(id -g)?)"
	value=$(cat "$1")
	case "$value" in
	"" | *[!A-Za-z0-9._~-]*) die "secret $1 is empty or has characters other than A-Z a-z 0-9 . _ ~ -: regenerate it" ;;
	esac
	printf '%s' "$value"
}

if [ -z "${DATABASE_URL:-}" ] && [ -n "${DATABASE_PASSWORD_FILE:-}" ]; then
	password=$(read_secret "$DATABASE_PASSWORD_FILE")
	DATABASE_URL="${DATABASE_SCHEME}://${DATABASE_USER}:${password}@${DATABASE_HOST}:${DATABASE_PORT}/${DATABASE_NAME}"
	export DATABASE_URL
fi

if [ -z "${REDIS_URL:-}" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
	password=$(read_secret "$REDIS_PASSWORD_FILE")
	REDIS_URL="redis://:${password}@${REDIS_HOST}:${REDIS_PORT}/0"
	export REDIS_URL
fi
unset password

exec "$@"
