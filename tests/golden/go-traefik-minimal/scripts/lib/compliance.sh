# shellcheck shell=bash
# The controls scripts/audit.sh checks, rendered from the template's extensions/compliance.py
# (docs/compliance.md maps the same controls to the files that implement them). Sourced, never run.
# shellcheck disable=SC2034  # read by scripts/audit.sh

CONTROLS=(non-root read-only-rootfs not-privileged capabilities-dropped no-new-privileges memory-limit cpu-limit pids-limit health-check restart-policy host-namespaces no-runtime-socket no-sensitive-host-paths published-ports no-secret-in-environment)
declare -A CONTROL_TITLE=(
	[non-root]='runs as a non-root user'
	[read-only-rootfs]='root filesystem mounted read-only'
	[not-privileged]='not privileged'
	[capabilities-dropped]='all Linux capabilities dropped, none added'
	[no-new-privileges]='cannot gain privileges (setuid, file capabilities)'
	[memory-limit]='memory limited'
	[cpu-limit]='CPU limited'
	[pids-limit]='process count limited'
	[health-check]='health checked while running'
	[restart-policy]='restart policy of its environment'
	[host-namespaces]='shares no host namespace'
	[no-runtime-socket]='no container runtime socket mounted'
	[no-sensitive-host-paths]='no sensitive host directory mounted'
	[published-ports]='publishes only what its environment allows'
	[no-secret-in-environment]='no secret in an environment variable'
)
# SERVICE/CONTROL -> why the template lets that service deviate (docs/compliance.md, "Exemptions").
declare -A EXEMPT=(
)
# ENV -> the restart policy its compose file sets.
declare -A RESTART_POLICY=([dev]=no [production]=always)
# ENV/SERVICE -> the container ports its compose file publishes; ANY_ADDRESS: may bind beyond loopback.
declare -A PUBLISHES=(
	[dev/proxy]="8080"
	[production/proxy]="8080"
)
declare -A PUBLISHES_ANY_ADDRESS=(
	[dev/proxy]=1
	[production/proxy]=1
)
