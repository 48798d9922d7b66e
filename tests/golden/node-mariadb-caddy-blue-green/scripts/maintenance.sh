#!/usr/bin/env bash
# Maintenance mode: the proxy answers every request with 503, Retry-After (300 s) and a page
# (with your message); the app's health path still reaches the app. No restart:
# requests in flight finish, and nothing is dropped when it goes on or off.
#   scripts/maintenance.sh ENV on [--message TEXT]
#   scripts/maintenance.sh ENV off
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

usage="usage: scripts/maintenance.sh ENV on [--message TEXT] | scripts/maintenance.sh ENV off"
[[ $# -ge 2 ]] || die "$usage"
env=$1
state=$2
shift 2
require_env "$env"
# A Swarm environment: refused in one line until this script has a Swarm version.
on_target "$env" "$@"
message="We are doing maintenance and will be back shortly."
case $state in
on)
	while [[ $# -gt 0 ]]; do
		case $1 in
		--message)
			[[ $# -ge 2 && -n $2 ]] || die "--message needs a text"
			message=$2
			shift 2
			;;
		*) die "unknown option $1 ($usage)" ;;
		esac
	done
	;;
off) [[ $# -eq 0 ]] || die "unknown option $1 ($usage)" ;;
*) die "$usage" ;;
esac
[[ -f "$PROJECT_ROOT/env/$env.env" ]] || die "$env has not been set up: nothing to put in maintenance"
compose_cmd "$env"

# html_escape TEXT: TEXT safe inside an HTML element.
html_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' <<<"$1"; }

page=$(mktemp)
trap 'rm -f "$page"' EXIT
cat >"$page" <<HTML
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Golden Node: maintenance</title></head>
<body><h1>Golden Node</h1><p>$(html_escape "$message")</p></body>
</html>
HTML
proxy_maintenance "$env" "$state" "$page" ||
	die "the proxy did not apply maintenance $state: see scripts/compose.sh $env logs proxy"
mkdir -p "$PROJECT_ROOT/.deploy/$env"
echo "$state" | write_atomically "$PROJECT_ROOT/.deploy/$env/maintenance"
log "$env: maintenance $state"
