# shellcheck shell=bash
# How Traefik is told which colour to route to. Its file provider watches .deploy/ENV/proxy/:
# routes.yml (a copy of config/traefik/ENV/dynamic.yml) and upstream.yml (the service
# "app": the active colour). Its read-only API says when a change is applied.
# Sourced by lib/common.sh, never run.

PROXY_CONTROL_FILE=upstream.yml
PROXY_API=http://127.0.0.1:8081/api/http/services/app@file

# proxy_init ENV: current routes, and the control file naming the active colour, before the
# proxy starts (every compose.sh call refreshes the copy of the routes where they changed: each
# write is a reload, after which Traefik holds the next change back for its throttle duration).
proxy_init() {
	local routes="$PROJECT_ROOT/.deploy/$1/proxy/routes.yml" source="$PROJECT_ROOT/config/traefik/$1/dynamic.yml"
	shared_dir "$PROJECT_ROOT/.deploy/$1/proxy"
	cmp -s "$source" "$routes" || write_atomically "$routes" <"$source"
	[[ -f "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE" ]] || proxy_write "$1" "$(active_colour "$1")"
}

# proxy_write ENV COLOUR: the control file names COLOUR (Traefik applies it within seconds).
proxy_write() {
	printf 'http:\n  services:\n    app:\n      loadBalancer:\n        serversTransport: app\n        servers:\n          - url: "%s"\n' "$(colour_url "$2")" |
		write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE"
}

colour_url() { echo "http://${APP_SERVICE[$1]}:$APP_PORT"; }

# proxy_route ENV COLOUR: the running proxy sends every new request to COLOUR. Returns once
# Traefik's API shows the change applied; non-zero if it is not within PROXY_SWITCH_TIMEOUT.
proxy_route() {
	local container deadline=$((SECONDS + PROXY_SWITCH_TIMEOUT))
	container=$(proxy_container "$1") || return 1
	proxy_write "$1" "$2"
	while ((SECONDS < deadline)); do
		docker exec "$container" wget -q -O - "$PROXY_API" 2>/dev/null | grep -qF "\"url\":\"$(colour_url "$2")\"" && return 0
		sleep 0.1
	done
	log "Traefik did not apply the route to ${APP_SERVICE[$2]} within ${PROXY_SWITCH_TIMEOUT} s"
	return 1
}

# proxy_maintenance ENV on|off [PAGE]: every request but the health path answered 503 with
# Retry-After, or served again; returns once Traefik's API shows the change. Traefik serves no
# files: PAGE is not shown (its own short 503 answer is).
proxy_maintenance() {
	local container routers present deadline=$((SECONDS + PROXY_SWITCH_TIMEOUT))
	container=$(proxy_container "$1") || return 1
	if [[ $2 == on ]]; then
		write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/maintenance.yml" <"$PROJECT_ROOT/config/traefik/$1/maintenance.yml"
	else
		rm -f "$PROJECT_ROOT/.deploy/$1/proxy/maintenance.yml"
	fi
	while ((SECONDS < deadline)); do
		routers=$(docker exec "$container" wget -q -O - "${PROXY_API%/services/*}/routers" 2>/dev/null) || routers=
		if [[ -n $routers ]]; then
			present=no
			[[ $routers != *'"name":"maintenance@file"'* ]] || present=yes
			[[ ($2 == on && $present == yes) || ($2 == off && $present == no) ]] && return 0
		fi
		sleep 0.1
	done
	log "Traefik did not apply maintenance $2 within ${PROXY_SWITCH_TIMEOUT} s"
	return 1
}
