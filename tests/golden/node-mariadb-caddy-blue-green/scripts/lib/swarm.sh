# shellcheck shell=bash
# The Swarm target (docs/swarm.md): the manager to talk to, what a stack file (swarm/ENV.yaml)
# reads from the environment, deploying it and waiting until Swarm has done what it was asked.
# Sourced after lib/common.sh and lib/release.sh, never run.

# The images the stack runs: env/ENV.env's X_IMAGE, else the pin, from IMAGE_MIRROR when it is set
# (the same rule as compose.yaml's ${X_IMAGE:-${IMAGE_MIRROR:-registry}/path}).
declare -gA SWARM_IMAGE_DEFAULTS=([CADDY_IMAGE]=docker.io/library/caddy:2.11 [MARIADB_IMAGE]=docker.io/library/mariadb:11.4)
# One-off jobs of the stack, in the order a deploy waits for them.
# shellcheck disable=SC2034  # read by scripts/swarm/deploy.sh
SWARM_JOBS=(db-roles migrate)

# swarm_init ENV: STACK, STACK_FILE, SWARM (the docker command line for the manager: SWARM_HOST, or
# DOCKER_HOST / the current context), SWARM_NODE_PATTERN and the variables the stack file reads.
# Dies if no manager answers.
swarm_init() {
	local env=$1 host out
	STACK=$PROJECT_SLUG-$env
	STACK_FILE=$PROJECT_ROOT/swarm/$env.yaml
	host=${SWARM_HOST:-$(env_value "$env" SWARM_HOST)}
	SWARM=(docker)
	[[ -z $host ]] || SWARM=(docker --host "$host")
	swarm_export_settings "$env"
	swarm_export_images
	swarm_export_versions "$env"
	out=$("${SWARM[@]}" node ls --quiet 2>&1 >/dev/null) ||
		die "no Swarm manager answers at ${host:-DOCKER_HOST or the current context} ($(tail -n 1 <<<"$out")): set SWARM_HOST in env/$env.env"
	SWARM_DEPLOY_TIMEOUT=${SWARM_DEPLOY_TIMEOUT:-300}
	# How this host reaches a node's daemon ({node}: its hostname), for what only the node knows.
	SWARM_NODE_PATTERN=${SWARM_NODE_HOST:-$(env_value "$env" SWARM_NODE_HOST)}
}

# swarm_db_exec ENV: DB_EXEC (lib/db.sh) runs in the container of ENV's database task, on whichever
# node it is: through that node's daemon, SWARM_NODE_HOST with {node} standing for its hostname.
swarm_db_exec() {
	local env=$1 node task container
	swarm_init "$env"
	read -r node task < <("${SWARM[@]}" service ps --no-trunc --filter desired-state=running \
		--format '{{.Node}} {{.ID}}' "${STACK}_db" 2>/dev/null | head -n 1) || true
	[[ -n ${task:-} ]] || die "the $env database is not running on the Swarm (docker service ps ${STACK}_db)"
	container=$(swarm_task_container "$task")
	[[ $SWARM_NODE_PATTERN == *"{node}"* ]] ||
		die "the $env database runs on node $node: set SWARM_NODE_HOST in env/$env.env to how this host reaches a node's Docker daemon, e.g. ssh://ops@{node}"
	# shellcheck disable=SC2034  # read by lib/db.sh
	DB_EXEC=(docker --host "$(swarm_node_host "$node")" exec -i "$container")
}

# swarm_task_container TASK: the ID of the container that runs (or ran) TASK, on its node.
swarm_task_container() {
	"${SWARM[@]}" inspect --type task --format '{{.Status.ContainerStatus.ContainerID}}' "$1"
}

# swarm_node_host NODE: how this host reaches NODE's daemon (SWARM_NODE_PATTERN, {node} replaced).
swarm_node_host() { printf '%s\n' "${SWARM_NODE_PATTERN//\{node\}/$1}"; }

# swarm_export_settings ENV: every KEY=VALUE of env/ENV.env, for the stack file's ${KEY} (as Compose
# reads its env file: the last line of a key counts, and a variable set in the environment wins).
swarm_export_settings() {
	local line key value
	local -A values=()
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
		key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
		[[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]] && value=${BASH_REMATCH[1]}
		values[$key]=$value
	done <"$PROJECT_ROOT/env/$1.env"
	for key in "${!values[@]}"; do
		[[ -n ${!key+set} ]] || export "$key=${values[$key]}"
	done
}

swarm_export_images() {
	local var default
	for var in "${!SWARM_IMAGE_DEFAULTS[@]}"; do
		[[ -n ${!var:-} ]] && continue
		default=${SWARM_IMAGE_DEFAULTS[$var]}
		export "$var=${IMAGE_MIRROR:-${default%%/*}}/${default#*/}"
	done
}

# swarm_export_versions ENV: each secret's and config's content hash, the version in its name: a
# changed file becomes a new object, and the services that read it are updated.
swarm_export_versions() {
	local var file
	while read -r var file; do
		[[ -f "$PROJECT_ROOT/$file" ]] || die "$file is missing: scripts/init-env.sh $1 makes the secret files"
		export "$var=$(sha256sum <"$PROJECT_ROOT/$file" | cut -c1-12)"
	done < <(swarm_objects "$1")
}

# swarm_objects ENV: "VARIABLE FILE" of every secret and config of ENV's stack.
swarm_objects() {
	case $1 in
	production)
		cat <<-'EOF'
			SWARM_SECRET_DB_APP_PASSWORD secrets/production/db_app_password
			SWARM_SECRET_DB_PASSWORD secrets/production/db_password
			SWARM_SECRET_DB_ROOT_PASSWORD secrets/production/db_root_password
			SWARM_SECRET_DB_BACKUP_PASSWORD secrets/production/db_backup_password
			SWARM_SECRET_DB_EXPORTER_PASSWORD secrets/production/db_exporter_password
			SWARM_SECRET_DB_ARCHIVE_PASSWORD secrets/production/db_archive_password
			SWARM_CONFIG_DB_ROLES_SH config/db/roles.sh
			SWARM_CONFIG_PROXY_CADDYFILE config/caddy/production/Caddyfile
			SWARM_CONFIG_PROXY_UPSTREAM swarm/proxy-upstream
		EOF
		;;
	esac
}

# swarm_service NAME: the stack's service NAME exists.
swarm_service() { "${SWARM[@]}" service inspect "${STACK}_$1" >/dev/null 2>&1; }

# swarm_spec NAME: "IMAGE APP_VERSION" that the stack's service NAME is set to run (empty if none).
swarm_spec() {
	local spec
	spec=$("${SWARM[@]}" service inspect --format \
		'{{.Spec.TaskTemplate.ContainerSpec.Image}}{{range .Spec.TaskTemplate.ContainerSpec.Env}} {{.}}{{end}}' "${STACK}_$1" 2>/dev/null) ||
		return 0
	awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^APP_VERSION=/) v = substr($i, 13); print $1, v }' <<<"$spec"
}

# swarm_deploy VAR=VALUE...: the stack, with these variables set (image references, replicas).
# Every stack deploy runs the jobs again (Swarm reruns a job on any update): both are idempotent.
# The app is only ever changed this way, so that its spec is always the stack file's (a
# `docker service update` would reorder its environment, and the next stack deploy restart it).
swarm_deploy() {
	local out
	out=$(env "$@" "${SWARM[@]}" stack deploy --prune --with-registry-auth --resolve-image always \
		--compose-file "$STACK_FILE" "$STACK" 2>&1) || die "docker stack deploy of $STACK failed: $(tail -n 1 <<<"$out")"
}

# swarm_wait_job NAME: the job's current run completed; dies with its last log lines if it failed
# for good (its restart policy gave up) or SWARM_DEPLOY_TIMEOUT passed.
swarm_wait_job() {
	local service=${STACK}_$1 deadline=$((SECONDS + SWARM_DEPLOY_TIMEOUT)) index tasks states
	while :; do
		index=$("${SWARM[@]}" service inspect --format '{{with .JobStatus}}{{.JobIteration.Index}}{{end}}' "$service")
		mapfile -t tasks < <("${SWARM[@]}" service ps --quiet --no-trunc "$service")
		states=$([[ -z ${tasks[*]:-} ]] || "${SWARM[@]}" inspect --type task \
			--format '{{with .JobIteration}}{{.Index}}{{end}} {{.Status.State}} {{.DesiredState}}' "${tasks[@]}")
		grep -q "^$index complete " <<<"$states" && return 0
		if ! grep -q "^$index [a-z]* \(running\|ready\|complete\)" <<<"$states" && grep -q "^$index \(failed\|rejected\) " <<<"$states"; then
			swarm_job_logs "$service"
			die "the $1 job failed (its last lines above; docker service ps $service)"
		fi
		if ((SECONDS >= deadline)); then
			swarm_job_logs "$service"
			die "the $1 job did not complete within $SWARM_DEPLOY_TIMEOUT s (its last lines above; docker service ps $service)"
		fi
		sleep 1
	done
}

swarm_job_logs() { "${SWARM[@]}" service logs --raw --tail 5 "$1" 2>&1 | sed 's/^/  /' >&2 || true; }

# swarm_update_mark: the app service's last update (state@start), to tell a new one from it.
swarm_update_mark() {
	"${SWARM[@]}" service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}@{{.UpdateStatus.StartedAt}}{{end}}' "${STACK}_app" 2>/dev/null || true
}

# The parts of a container spec a deploy changes: image, settings, secrets and configs (whole specs
# differ in empty fields the engine leaves out of a task's copy, e.g. DNSConfig).
SWARM_SPEC_FORMAT='{{.Image}} {{json .Env}}{{range .Secrets}} {{.SecretName}}{{end}}{{range .Configs}} {{.ConfigName}}{{end}}'

# swarm_app_current: every task of the app that should run has the service's current container
# spec (SWARM_SPEC_FORMAT). A deploy that changes only a secret keeps the image: without this, the
# old tasks would pass for the new ones until Swarm starts its update.
swarm_app_current() {
	local spec specs tasks=()
	spec=$("${SWARM[@]}" service inspect --format "{{with .Spec.TaskTemplate.ContainerSpec}}$SWARM_SPEC_FORMAT{{end}}" "${STACK}_app") || return 1
	mapfile -t tasks < <("${SWARM[@]}" service ps --quiet --no-trunc --filter desired-state=running "${STACK}_app")
	[[ -n ${tasks[*]:-} ]] || return 1
	specs=$("${SWARM[@]}" inspect --type task --format "{{with .Spec.ContainerSpec}}$SWARM_SPEC_FORMAT{{end}}" "${tasks[@]}") || return 1
	! grep -qvxF -- "$spec" <<<"$specs"
}

# swarm_failed_tasks REF: why the app's tasks of REF are not running (the last 3), on stderr: each
# one's state and Swarm's error, its last health check (from its node's daemon, when
# SWARM_NODE_HOST says how to reach it) and the lines it logged last.
swarm_failed_tasks() {
	local ref=$1 id name node image state error container check shown=0
	while IFS=$'\t' read -r id name node image state error; do
		[[ $image == "$ref" && $state != Running* ]] || continue
		printf '  task %s (%s on %s): %s%s\n' "${id:0:12}" "$name" "$node" "$state" "${error:+, $error}" >&2
		if [[ $SWARM_NODE_PATTERN == *"{node}"* ]] &&
			container=$(swarm_task_container "$id" 2>/dev/null) &&
			check=$(docker --host "$(swarm_node_host "$node")" inspect --format \
				'{{with .State.Health}}{{range .Log}}{{"\n"}}exit {{.ExitCode}}: {{printf "%q" .Output}}{{end}}{{end}}' \
				"$container" 2>/dev/null | tail -n 1) && [[ -n $check ]]; then
			printf '    last health check: %s\n' "$check" >&2
		fi
		"${SWARM[@]}" service logs --raw --tail 5 "$id" 2>&1 | sed 's/^/    /' >&2 || true
		((++shown < 3)) || break
	done < <("${SWARM[@]}" service ps --no-trunc \
		--format '{{.ID}}\t{{.Name}}\t{{.Node}}\t{{.Image}}\t{{.CurrentState}}\t{{.Error}}' "${STACK}_app" 2>/dev/null)
	return 0
}

# swarm_wait_app REF MARK: every replica of the app runs REF with the service's current spec and
# is healthy (a task is "running" only once its health check passed). Returns 2 once Swarm has
# rolled an update back by itself (a new task failed), 1 after SWARM_DEPLOY_TIMEOUT; either way
# the failed tasks of REF are shown first.
swarm_wait_app() {
	local ref=$1 mark=$2 deadline=$((SECONDS + SWARM_DEPLOY_TIMEOUT)) update wanted running
	while :; do
		update=$(swarm_update_mark)
		if [[ -n $update && $update != "$mark" ]]; then
			case ${update%%@*} in
			rollback_completed)
				swarm_failed_tasks "$ref"
				return 2
				;;
			paused | rollback_paused)
				swarm_failed_tasks "$ref"
				return 1
				;;
			esac
		fi
		if [[ ${update%%@*} != updating && ${update%%@*} != rollback_started ]]; then
			wanted=$("${SWARM[@]}" service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_app")
			running=$("${SWARM[@]}" service ps --no-trunc --filter desired-state=running \
				--format '{{.Image}} {{.CurrentState}}' "${STACK}_app" | grep -c "^${ref//./\\.} Running" || true)
			[[ $running -eq $wanted ]] &&
				[[ $("${SWARM[@]}" service ps --quiet --filter desired-state=running "${STACK}_app" | wc -l) -eq $wanted ]] &&
				swarm_app_current && return 0
		fi
		if ((SECONDS >= deadline)); then
			swarm_failed_tasks "$ref"
			return 1
		fi
		sleep 1
	done
}

