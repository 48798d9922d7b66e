#!/usr/bin/env bash
# Checks the running containers of an environment against the controls the template promises
# (docs/compliance.md: a CIS Docker Benchmark subset). One line per control and container: PASS,
# FAIL, or EXEMPT with the reason the template documents. Exits 1 if any control fails; writes
# metrics/ENV/audit.prom for the ComplianceAuditFailed and ComplianceAuditMissing alerts.
#   scripts/audit.sh ENV
# Reads the secret files of ENV to find their values in environment variables: run it as the
# user that runs the stack (root under the systemd timer).
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/compliance.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/compliance.sh"

# One "key=value" line per fact of a container (several for mounts, ports and variables).
# shellcheck disable=SC2016  # a Go template, not shell
INSPECT_FORMAT='service={{index .Config.Labels "com.docker.compose.service"}}
user={{.Config.User}}
read_only={{.HostConfig.ReadonlyRootfs}}
privileged={{.HostConfig.Privileged}}
cap_drop={{range .HostConfig.CapDrop}}{{.}},{{end}}
cap_add={{range .HostConfig.CapAdd}}{{.}},{{end}}
security_opt={{range .HostConfig.SecurityOpt}}{{.}},{{end}}
memory={{.HostConfig.Memory}}
cpus={{.HostConfig.NanoCpus}}
pids={{if .HostConfig.PidsLimit}}{{.HostConfig.PidsLimit}}{{else}}0{{end}}
health={{with index .Config "Healthcheck"}}{{range .Test}}{{.}} {{end}}{{end}}
restart={{.HostConfig.RestartPolicy.Name}}
namespaces=network:{{.HostConfig.NetworkMode}} pid:{{.HostConfig.PidMode}} ipc:{{.HostConfig.IpcMode}} uts:{{.HostConfig.UTSMode}} userns:{{.HostConfig.UsernsMode}}
{{range .Mounts}}mount={{.Type}} {{.Source}}
{{end}}{{range $port, $bindings := .HostConfig.PortBindings}}{{range $bindings}}port={{$port}} {{.HostIp}}:{{.HostPort}}
{{end}}{{end}}{{range index .Config "Env"}}variable={{.}}
{{end}}'
SENSITIVE_HOST_PATHS=(/ /boot /dev /etc /lib /proc /sys /usr /var/lib/docker /var/run /run)
# Variable names that say they hold a secret; *_FILE (and *__FILE) name a file that does.
SECRET_NAME='(^|_)(PASSWORD|PASSWD|PASS|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIALS?)(_|$)'

# --- one function per control: 0 passes; `detail` says what was seen -----------------------------

check_non-root() {
	local uid=${fact[user]%%:*}
	detail="user ${fact[user]:-(image default: root)}"
	[[ -n $uid && $uid != 0 && $uid != root ]]
}
check_read-only-rootfs() { detail="read_only=${fact[read_only]}"; [[ ${fact[read_only]} == true ]]; }
check_not-privileged() { detail="privileged=${fact[privileged]}"; [[ ${fact[privileged]} == false ]]; }
check_capabilities-dropped() {
	detail="cap_drop=${fact[cap_drop]%,} cap_add=${fact[cap_add]%,}"
	[[ ,${fact[cap_drop]^^} == *,ALL,* && -z ${fact[cap_add]} ]]
}
check_no-new-privileges() {
	detail="security_opt=${fact[security_opt]%,}"
	[[ ,${fact[security_opt]} =~ ,no-new-privileges(:true|=true)?, ]]
}
check_memory-limit() { detail="memory=${fact[memory]} bytes"; [[ ${fact[memory]} -gt 0 ]]; }
check_cpu-limit() { detail="nano_cpus=${fact[cpus]}"; [[ ${fact[cpus]} -gt 0 ]]; }
check_pids-limit() { detail="pids=${fact[pids]}"; [[ ${fact[pids]} -gt 0 ]]; }
check_health-check() {
	detail="test: ${fact[health]:-none}"
	[[ -n ${fact[health]} && ${fact[health]} != NONE\ * ]]
}
check_restart-policy() {
	local policy=${fact[restart]:-no}
	detail="restart=$policy, $env sets ${RESTART_POLICY[$env]}"
	[[ $policy == "${RESTART_POLICY[$env]}" ]]
}
check_host-namespaces() {
	detail=${fact[namespaces]}
	[[ " ${fact[namespaces]} " != *:host\ * ]]
}
check_no-runtime-socket() {
	local mount found=()
	for mount in "${mounts[@]}"; do
		[[ ${mount#* } =~ (docker|containerd|podman)\.sock$ ]] && found+=("${mount#* }")
	done
	detail=${found[*]:-"no socket mounted"}
	[[ ${#found[@]} -eq 0 ]]
}
check_no-sensitive-host-paths() {
	local mount source path found=()
	for mount in "${mounts[@]}"; do
		[[ $mount == bind\ * ]] || continue
		source=${mount#bind }
		[[ $source == "$PROJECT_ROOT"/* || $source =~ \.sock$ ]] && continue
		for path in "${SENSITIVE_HOST_PATHS[@]}"; do
			[[ $source == "$path" || $source == "${path%/}"/* ]] && found+=("$source") && break
		done
	done
	detail=${found[*]:-"bind mounts from the project only"}
	[[ ${#found[@]} -eq 0 ]]
}
check_published-ports() {
	local binding port address allowed=" ${PUBLISHES[$env/${fact[service]}]:-} " bad=()
	for binding in "${ports[@]}"; do
		port=${binding%%/*}
		address=${binding#* }
		address=${address%:*}
		if [[ $allowed != *" $port "* ]]; then
			bad+=("$port on ${address:-0.0.0.0}")
		elif [[ -z ${PUBLISHES_ANY_ADDRESS[$env/${fact[service]}]:-} && $address != 127.0.0.1 && $address != ::1 ]]; then
			bad+=("$port on ${address:-0.0.0.0}, not loopback")
		fi
	done
	detail=${bad[*]:-"${#ports[@]} published, as $env allows"}
	[[ ${#bad[@]} -eq 0 ]]
}
check_no-secret-in-environment() {
	local variable name value secret bad=()
	for variable in "${variables[@]}"; do
		name=${variable%%=*}
		value=${variable#*=}
		if [[ ! $name =~ _FILE$ && ${name^^} =~ $SECRET_NAME ]]; then
			bad+=("$name")
			continue
		fi
		for secret in "${secret_values[@]}"; do
			[[ $value == "$secret" ]] && bad+=("$name (a secret file's value)") && break
		done
	done
	detail=${bad[*]:-"${#variables[@]} variables, none secret"}
	[[ ${#bad[@]} -eq 0 ]]
}

# --- the audit ------------------------------------------------------------------------------------

read_secret_values() {
	local file
	secret_values=()
	for file in "$PROJECT_ROOT/secrets/$env"/*; do
		[[ -f $file && -r $file ]] || continue
		# Short values would match by chance; generated secrets are 48 characters.
		[[ $(wc -c <"$file") -ge 12 ]] && secret_values+=("$(cat "$file")")
	done
}

# audit_container NAME: a line per control; adds to `failures`.
audit_container() {
	local container=$1 facts line control detail status
	facts=$(docker inspect --format "$INSPECT_FORMAT" "$container") || die "cannot inspect $container"
	fact=() mounts=() ports=() variables=()
	while IFS= read -r line; do
		case $line in
		mount=*) mounts+=("${line#mount=}") ;;
		port=*) ports+=("${line#port=}") ;;
		variable=*) variables+=("${line#variable=}") ;;
		*=*) fact[${line%%=*}]=${line#*=} ;;
		esac
	done <<<"$facts"
	for control in "${CONTROLS[@]}"; do
		detail=
		if "check_$control"; then
			status=PASS
		elif [[ -n ${EXEMPT[${fact[service]}/$control]:-} ]]; then
			status=EXEMPT
			detail="${EXEMPT[${fact[service]}/$control]} ($detail)"
		else
			status=FAIL
			failures=$((failures + 1))
		fi
		printf '%-6s %-24s %-44s %s\n' "$status" "$control" "$container" "$detail"
	done
}

write_metrics() {
	local dir=$PROJECT_ROOT/metrics/$env
	shared_dir "$dir"
	printf '%s{environment="%s"} %s\n' \
		compliance_audit_failures "$env" "$failures" \
		compliance_audit_containers "$env" "$1" \
		compliance_audit_last_run_timestamp_seconds "$env" "$(date -u +%s)" | write_atomically "$dir/audit.prom"
}

[[ $# -eq 1 ]] || die "usage: scripts/audit.sh ENV"
env=$1
require_env "$env"
# A Swarm environment: refused in one line until this script has a Swarm version.
on_target "$env" "$@"
require_cmd docker "install Docker Engine with the compose plugin"
mapfile -t containers < <(docker ps --filter "label=com.docker.compose.project=$PROJECT_SLUG-$env" --format '{{.Names}}' | sort)
[[ ${#containers[@]} -gt 0 ]] || die "no running container in $env: start it first (scripts/compose.sh $env up -d --wait)"
declare -A fact
declare -a mounts ports variables secret_values
read_secret_values
failures=0
for container in "${containers[@]}"; do
	audit_container "$container"
done
write_metrics "${#containers[@]}"
if [[ $failures -gt 0 ]]; then
	die "$failures control(s) failed in $env (FAIL lines above; docs/compliance.md says what each checks)"
fi
log "$env: ${#containers[@]} containers pass every control (or are exempt, as docs/compliance.md says)"
