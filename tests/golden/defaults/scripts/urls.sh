#!/usr/bin/env bash
# Prints where the running stack of an environment answers: the proxy's URLs and, where the
# environment publishes them (dev), the database's and the monitoring UIs' addresses, as Docker
# bound them (the ports are settings in env/ENV.env).
#   scripts/urls.sh ENV
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -eq 1 ]] || die "usage: scripts/urls.sh ENV"
env=$1
require_env "$env"
require_cmd docker "install Docker Engine with the compose plugin"
[[ -f "$PROJECT_ROOT/env/$env.env" ]] || die "$env has not been set up: run scripts/compose.sh $env up -d --wait first"
compose_cmd "$env"

# published ENV: "service port-in-container scheme what" for everything ENV publishes.
published() {
	case $1 in
	dev) printf '%s\n' "proxy 8080 http the app" "db 5432 postgresql db" "prometheus 9090 http prometheus" "alertmanager 9093 http alertmanager" "grafana 3000 http grafana" ;;
	staging) printf '%s\n' "proxy 8080 http the app (redirects to https)" "proxy 8443 https the app (staging.my-service.example.com)" "grafana 3000 http grafana" ;;
	production) printf '%s\n' "proxy 8080 http the app (redirects to https)" "proxy 8443 https the app (my-service.example.com)" "grafana 3000 http grafana" ;;
	esac
}

found=0
while read -r service port scheme what; do
	address=$("${COMPOSE[@]}" port "$service" "$port" 2>/dev/null | head -n 1) || true
	[[ -n $address ]] || continue
	found=1
	printf '%-14s %s://%s  %s\n' "$service" "$scheme" "${address/0.0.0.0/localhost}" "$what"
done < <(published "$env")
((found)) || die "nothing of $env answers: start it with scripts/compose.sh $env up -d --wait"
