#!/usr/bin/env bash
# Each container's CPU and memory, for Prometheus, with no Docker socket and no privilege: every
# service of ENV runs in the cgroup slice SLUG-ENV-SERVICE.slice (compose.ENV.yaml cgroup_parent),
# and the kernel shows every user each cgroup's counters under /sys/fs/cgroup. Written to
# metrics/ENV/containers.prom, which node-exporter's textfile collector serves.
#   scripts/container-metrics.sh ENV          every CONTAINER_METRICS_INTERVAL seconds until stopped
#   scripts/container-metrics.sh ENV --once   once (cron)
# Settings (environment variables):
#   CONTAINER_METRICS_INTERVAL  seconds between two writes [15]
#   CONTAINER_METRICS_FILE      where [metrics/ENV/containers.prom]
#   CGROUP_ROOT                 the host's cgroup file system [/sys/fs/cgroup]
set -Eeuo pipefail
# shellcheck source=lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

# Memory limits at or above this are "no limit" (cgroup v1 writes a page-aligned 2^63 - 1).
UNLIMITED=4611686018427387904

usage() { die "usage: scripts/container-metrics.sh ENV [--once]"; }

# slice_dirs ROOT: the directories of this environment's slices under one hierarchy. The cgroup
# driver decides where they are: systemd nests SLUG-ENV-SERVICE.slice in SLUG.slice, SLUG-ENV.slice
# and so on; cgroupfs puts it under the container runtime's own cgroup.
slice_dirs() {
	find "$1/" -type d -name "$SLICE_PREFIX*.slice" -prune 2>/dev/null || true
}

# container_dirs SLICE_DIR: one directory per container (cgroupfs: its ID; systemd: docker-ID.scope).
container_dirs() {
	find "$1/" -regextype posix-extended -mindepth 1 -maxdepth 1 -type d \( -regex '.*/[0-9a-f]{64}' -o -name 'docker-*.scope' \) 2>/dev/null || true
}

# labels CONTAINER_DIR SLICE_DIR: the Prometheus labels of one container.
labels() {
	local id=${1##*/} service=${2##*/}
	id=${id#docker-}
	id=${id%.scope}
	service=${service#"$SLICE_PREFIX"}
	service=${service%.slice}
	printf 'environment="%s",service="%s",container_id="%s"' "$env" "$service" "${id:0:12}"
}

# stat_value FILE KEY: KEY's value in a cgroup "key value" file (0 when it or the file is absent).
stat_value() {
	local key value
	[[ -r $1 ]] || {
		echo 0
		return 0
	}
	while read -r key value; do
		[[ $key == "$2" ]] && {
			echo "$value"
			return 0
		}
	done 2>/dev/null <"$1" || true
	echo 0
}

# seconds NANOSECONDS: as a decimal number of seconds.
seconds() { printf '%d.%09d' $(($1 / 1000000000)) $(($1 % 1000000000)); }

# each_container HIERARCHY FUNCTION: FUNCTION DIR LABELS for each container of this environment's
# slices in one cgroup hierarchy.
each_container() {
	local slice dir
	while IFS= read -r slice; do
		while IFS= read -r dir; do
			"$2" "$dir" "$(labels "$dir" "$slice")"
		done < <(container_dirs "$slice")
	done < <(slice_dirs "$1")
}

# memory_samples LABELS USAGE INACTIVE_FILE LIMIT OOM_KILLS: a container's memory lines (the working
# set is what its limit counts; LIMIT empty: no limit, no line).
memory_samples() {
	echo "compose_container_memory_working_set_bytes{$1} $(($2 > $3 ? $2 - $3 : 0))"
	[[ -z $4 ]] || echo "compose_container_memory_limit_bytes{$1} $4"
	echo "compose_container_oom_kills_total{$1} $5"
}

# A container that exits while it is read (its files vanish) is left out, never written with an
# empty value.

# container_v2 DIR LABELS: cgroup v2, one unified hierarchy: CPU and memory in one directory.
container_v2() {
	local usage limit
	read -r usage 2>/dev/null <"$1/memory.current" || return 0
	echo "compose_container_cpu_seconds_total{$2} $(seconds $(($(stat_value "$1/cpu.stat" usage_usec) * 1000)))"
	read -r limit 2>/dev/null <"$1/memory.max" || limit=max
	[[ $limit != max ]] || limit=
	memory_samples "$2" "$usage" "$(stat_value "$1/memory.stat" inactive_file)" "$limit" "$(stat_value "$1/memory.events" oom_kill)"
}

# cpu_v1, memory_v1 DIR LABELS: cgroup v1, where CPU (cpuacct) and memory are separate hierarchies.
cpu_v1() {
	local usage
	read -r usage 2>/dev/null <"$1/cpuacct.usage" || return 0
	echo "compose_container_cpu_seconds_total{$2} $(seconds "$usage")"
}

memory_v1() {
	local usage limit
	read -r usage 2>/dev/null <"$1/memory.usage_in_bytes" || return 0
	read -r limit 2>/dev/null <"$1/memory.limit_in_bytes" || limit=$UNLIMITED
	((limit < UNLIMITED)) || limit=
	memory_samples "$2" "$usage" "$(stat_value "$1/memory.stat" total_inactive_file)" "$limit" "$(stat_value "$1/memory.oom_control" oom_kill)"
}

sample_v1() {
	each_container "$CGROUP_ROOT/cpuacct" cpu_v1
	each_container "$CGROUP_ROOT/memory" memory_v1
}

sample_v2() { each_container "$CGROUP_ROOT" container_v2; }

# Each metric: name, type, help.
METRICS=(
	"compose_container_cpu_seconds_total counter CPU time used by the container (user and system)."
	"compose_container_memory_working_set_bytes gauge Memory in use by the container, less inactive page cache (what its limit counts)."
	"compose_container_memory_limit_bytes gauge The container's memory limit (none: no limit)."
	"compose_container_oom_kills_total counter Processes of the container killed for lack of memory."
)

# write_sample: the file in one rename; each metric's HELP and TYPE, then its samples.
write_sample() {
	local lines metric name type help line containers=0
	if [[ -f $CGROUP_ROOT/cgroup.controllers ]]; then lines=$(sample_v2); else lines=$(sample_v1); fi
	{
		for metric in "${METRICS[@]}"; do
			read -r name type help <<<"$metric"
			printf '# HELP %s %s\n# TYPE %s %s\n' "$name" "$help" "$name" "$type"
			while IFS= read -r line; do
				[[ $line == "$name{"* ]] || continue
				echo "$line"
				[[ $name != compose_container_cpu_seconds_total ]] || containers=$((containers + 1))
			done <<<"$lines"
		done
		printf '# HELP compose_container_metrics_containers Containers found in the slices of this environment.\n'
		printf '# TYPE compose_container_metrics_containers gauge\n'
		printf 'compose_container_metrics_containers{environment="%s"} %d\n' "$env" "$containers"
		printf '# HELP compose_container_metrics_timestamp_seconds When this file was written (ContainerMetricsStale).\n'
		printf '# TYPE compose_container_metrics_timestamp_seconds gauge\n'
		printf 'compose_container_metrics_timestamp_seconds{environment="%s"} %s\n' "$env" "$(date -u +%s)"
	} | write_atomically "$OUTPUT"
}

[[ $# -ge 1 && $# -le 2 ]] || usage
env=$1
once=${2:-}
[[ -z $once || $once == --once ]] || usage
require_env "$env"
CGROUP_ROOT=${CGROUP_ROOT:-/sys/fs/cgroup}
INTERVAL=${CONTAINER_METRICS_INTERVAL:-15}
OUTPUT=${CONTAINER_METRICS_FILE:-$PROJECT_ROOT/metrics/$env/containers.prom}
[[ $INTERVAL =~ ^[1-9][0-9]*$ ]] || die "CONTAINER_METRICS_INTERVAL is '$INTERVAL': give a whole number of seconds, e.g. 15"
[[ -d $CGROUP_ROOT ]] || die "$CGROUP_ROOT is not a directory: set CGROUP_ROOT to where the host mounts its cgroups"
[[ -d ${OUTPUT%/*} ]] || die "${OUTPUT%/*} does not exist: start $env once (scripts/compose.sh $env up -d) or set CONTAINER_METRICS_FILE"
# cron and supervisor run it as root without capabilities: root must own the directory.
[[ -w ${OUTPUT%/*} ]] || die "${OUTPUT%/*} is not writable by user $(id -un) (without capabilities root needs to own it: chown $(id -un) ${OUTPUT%/*})"
SLICE_PREFIX="$PROJECT_SLUG-$env-"

while true; do
	write_sample
	[[ -z $once ]] || exit 0
	sleep "$INTERVAL"
done
