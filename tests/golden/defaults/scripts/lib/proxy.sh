# shellcheck shell=bash
# How nginx is told which colour to route to. nginx includes .deploy/ENV/proxy/upstream.conf
# (`set $app_upstream ...`); a configuration reload applies it: new workers route to the new
# colour, the workers of the old configuration stop accepting and finish what they have.
# Sourced by lib/common.sh, never run.

PROXY_CONTROL_FILE=upstream.conf
PROXY_CONFIG_IN_CONTAINER=/etc/nginx/deploy/nginx.conf

# proxy_init ENV: the control file names the active colour before the proxy starts.
proxy_init() {
	[[ -f "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE" ]] || proxy_write "$1" "$(active_colour "$1")"
}

# proxy_write ENV COLOUR: the control file names COLOUR (read at the next reload).
proxy_write() {
	shared_dir "$PROJECT_ROOT/.deploy/$1/proxy"
	# shellcheck disable=SC2016  # $app_upstream is nginx's variable, written as it is
	printf 'set $app_upstream http://%s:%s;\n' "${APP_SERVICE[$2]}" "$APP_PORT" |
		write_atomically "$PROJECT_ROOT/.deploy/$1/proxy/$PROXY_CONTROL_FILE"
}

# proxy_route ENV COLOUR: the running proxy sends every new request to COLOUR. Returns once no
# worker of the previous configuration accepts requests; non-zero if nginx refused the change.
proxy_route() {
	nginx_apply "$1" proxy_write "$1" "$2"
}

# proxy_maintenance ENV on|off [PAGE]: every request but the health path answered 503 with
# Retry-After and PAGE (an HTML file), or served again; applied like a switch of colour.
proxy_maintenance() {
	nginx_apply "$1" maintenance_write "$@"
}

maintenance_write() {
	local dir="$PROJECT_ROOT/.deploy/$1/proxy"
	if [[ $2 == on ]]; then
		write_atomically "$dir/maintenance.html" <"$3"
		printf '# scripts/maintenance.sh %s on\nerror_page 503 /maintenance.html;\nreturn 503;\n' "$1" |
			write_atomically "$dir/maintenance.conf"
	else
		rm -f "$dir/maintenance.conf"
	fi
}

# nginx_apply ENV COMMAND...: runs COMMAND (it writes the files nginx includes), then has nginx
# reload them: returns once no worker of the previous configuration accepts requests.
# Non-zero if nginx refused the change or its old workers still accept after PROXY_SWITCH_TIMEOUT.
nginx_apply() {
	local env=$1 container status=0
	shift
	container=$(proxy_container "$env") || return 1
	"$@"
	# One docker exec for the whole switch: each costs about 70 ms of CPU, taken from the requests.
	docker exec "$container" sh -c "$NGINX_RELOAD" sh "$PROXY_CONFIG_IN_CONTAINER" "$PROXY_SWITCH_TIMEOUT" || status=$?
	((status != 3)) || log "nginx did not retire the workers of its previous configuration within ${PROXY_SWITCH_TIMEOUT} s"
	return "$status"
}

# Run in the proxy's container: sh -c "$NGINX_RELOAD" sh CONFIG TIMEOUT. Checks CONFIG (exit 2 if
# refused), reloads, then waits until no worker that accepted before does (exit 3 after TIMEOUT s).
# shellcheck disable=SC2016  # expanded by the container's shell
NGINX_RELOAD='
workers() {
	for p in /proc/[0-9]*; do
		c=$(tr "\0" " " <"$p/cmdline" 2>/dev/null) || continue
		case $c in *"is shutting down"*) ;; "nginx: worker process"*) echo "${p#/proc/}" ;; esac
	done
}
before=$(workers)
nginx -q -t -c "$1" || exit 2
nginx -q -c "$1" -s reload || exit 2
end=$(($(date +%s) + $2))
while [ "$(date +%s)" -lt "$end" ]; do
	now=" $(echo $(workers)) "
	old=no
	for p in $before; do case $now in *" $p "*) old=yes ;; esac; done
	[ "$old" = no ] && exit 0
	sleep 0.1
done
exit 3'
