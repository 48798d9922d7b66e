#!/usr/bin/env bash
# CI stage "test", runnable locally: builds the image and starts ENV's stack on this machine's
# loopback, sends a request through the proxy to the health path, audits the running containers, backs up
# the database and proves the backup restores, then removes the stack and its volumes.
#   scripts/ci/test.sh [ENV]            ENV defaults to staging
# Settings: CI_HTTP_PORT [18080], CI_HTTPS_PORT [18443], CI_GRAFANA_PORT [13000] (host ports),
# CI_BIND_ADDRESS [127.0.0.1] (where they listen), CI_TEST_ADDRESS [CI_BIND_ADDRESS] (the IP address
# the request goes to: the Docker host's, with Docker-in-Docker), CI_KEEP_STACK=yes (leave the
# stack running, for a look after a failure).
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

[[ $# -le 1 ]] || die "usage: scripts/ci/test.sh [ENV]"
env=${1:-staging}
require_env "$env"
require_cmd docker "install Docker Engine with the compose plugin"
require_cmd curl "install curl"
scripts=$PROJECT_ROOT/scripts
# Environments where TLS ends at the proxy: the request goes there over HTTPS.
TLS_ENVIRONMENTS=(staging production)

# set_setting KEY VALUE: in env/ENV.env, replacing an earlier value.
set_setting() {
	local file=$PROJECT_ROOT/env/$env.env
	{ grep -v "^$1=" "$file" || true; printf '%s=%s\n' "$1" "$2"; } >"$file.new"
	mv -f "$file.new" "$file"
}

cleanup() {
	if [[ ${CI_KEEP_STACK:-no} == yes ]]; then
		log "CI_KEEP_STACK=yes, the $env stack keeps running"
	else
		"$scripts/compose.sh" "$env" down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 || true
	fi
}

"$scripts/init-env.sh" "$env" >/dev/null
set_setting BIND_ADDRESS "${CI_BIND_ADDRESS:-127.0.0.1}"
set_setting HTTP_PORT "${CI_HTTP_PORT:-18080}"
set_setting HTTPS_PORT "${CI_HTTPS_PORT:-18443}"
set_setting GRAFANA_PORT "${CI_GRAFANA_PORT:-13000}"
trap cleanup EXIT
log "building and starting $env"
"$scripts/compose.sh" "$env" up --detach --build --wait --wait-timeout 300 ||
	die "failed: the $env stack did not become healthy ($scripts/compose.sh $env ps; logs)"

domain=$(domain_of "$env")
if is_one_of "$env" "${TLS_ENVIRONMENTS[@]}"; then
	scheme=https port=${CI_HTTPS_PORT:-18443}
else
	scheme=http port=${CI_HTTP_PORT:-18080}
fi
url="$scheme://$domain:$port/healthz"
log "GET $url through the proxy"
# The certificate of a test stack is the self-signed one init-env.sh made: --insecure.
status=$(curl --silent --show-error --insecure --max-time 10 --retry 5 --retry-connrefused --retry-delay 2 \
	--resolve "$domain:$port:${CI_TEST_ADDRESS:-${CI_BIND_ADDRESS:-127.0.0.1}}" --output /dev/null --write-out '%{http_code}' "$url") ||
	die "failed: no answer from $url"
[[ $status == 200 ]] || die "failed: $url answered $status, not 200"

log "compliance audit of the running $env stack"
if ! report=$("$scripts/audit.sh" "$env"); then
	grep '^FAIL' <<<"$report" >&2 || true
	die "failed: scripts/audit.sh $env found the failing controls above"
fi

log "backup and verification"
id=$("$scripts/backup.sh" "$env" | tail -n 1) || die "failed: scripts/backup.sh $env"
"$scripts/verify-backup.sh" "$env" "$id" || die "failed: backup $id does not restore"
log "$env passed (health through the proxy, audit, backup round trip)"
