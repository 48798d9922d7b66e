# shellcheck shell=bash
# How Caddy is told which colour to route to. Caddy reads the name of the colour's service from
# .deploy/ENV/proxy/upstream-name at every request (the {file.*} placeholder of its dynamic
# upstreams) and resolves it through Docker's DNS: no reload, nothing to wait for.
# Sourced by lib/common.sh, never run.

PROXY_CONTROL_FILE=upstream-name
# Maintenance mode's switch, "on" or "off", read by Caddy at every request like the colour's name.
PROXY_MAINTENANCE_FILE=maintenance

# proxy_init ENV: the control file names the active colour before the proxy starts. A project
# put in maintenance before the switch file existed (the page alone meant on) stays in it.
proxy_init() {
	local dir="$PROJECT_ROOT/.deploy/$1/proxy"
	[[ -f "$dir/$PROXY_CONTROL_FILE" ]] || proxy_write "$1" "$(active_colour "$1")"
	[[ -f "$dir/$PROXY_MAINTENANCE_FILE" || ! -f "$dir/maintenance.html" ]] ||
		printf on | write_atomically "$dir/$PROXY_MAINTENANCE_FILE"
}

# proxy_requirements: what the deploy needs on the host besides Docker: nothing more.
proxy_requirements() { :; }

# proxy_write ENV COLOUR: the control file names COLOUR's service, in one rename.
proxy_write() {
	shared_dir "$PROJECT_ROOT/.deploy/$1/proxy"
	printf '%s' "${APP_SERVICE[$2]}" | write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE"
}

# proxy_route ENV COLOUR: every request that starts after this returns goes to COLOUR.
proxy_route() {
	proxy_container "$1" >/dev/null || return 1
	proxy_write "$1" "$2"
}

# proxy_maintenance ENV on|off [PAGE]: every request but the health path answered 503 with
# Retry-After and PAGE (an HTML file), or served again. Caddy reads the switch at every request.
# The page stays when it goes off: a request that read "on" just before still finds its page
# (removing it answered such a request 404).
proxy_maintenance() {
	local dir="$PROJECT_ROOT/.deploy/$1/proxy"
	proxy_container "$1" >/dev/null || return 1
	[[ $2 == off ]] || write_atomically "$dir/maintenance.html" <"$3"
	printf '%s' "$2" | write_atomically "$dir/$PROXY_MAINTENANCE_FILE"
}
