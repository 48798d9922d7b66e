#!/usr/bin/env bash
# CI stage "lint", runnable locally: the Dockerfile (hadolint), every shell script (shellcheck),
# every YAML file (yamllint), the compose files of each environment (docker compose config), and
# the alert rules' unit tests (promtool, from the Prometheus image). Stops at the first check that fails,
# naming it. Linters from scripts/ci/install-tools.sh (.ci-tools/bin) or the PATH.
#   scripts/ci/lint.sh
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

PATH=$PROJECT_ROOT/.ci-tools/bin:$PATH

check() {
	local name=$1
	shift
	log "$name"
	"$@" || die "failed: $name (the output above says where)"
}

# compose_config ENV: the merged compose files of ENV are valid, with the committed examples of its
# settings (a CI runner has no env/ENV.env; the app's env file is made from its example if missing),
# with the Engine 25 settings (`config` does not ask the engine for them).
compose_config() {
	[[ -f env/$1.app.env ]] || cp "env/$1.app.env.example" "env/$1.app.env"
	docker compose --project-name "$PROJECT_SLUG-$1" --project-directory . --env-file "env/$1.env.example" \
		-f compose.yaml -f "compose.$1.yaml" -f compose.engine-25.yaml config --quiet
}

for tool in hadolint shellcheck yamllint; do
	require_cmd "$tool" "run scripts/ci/install-tools.sh first"
done
require_cmd docker "install Docker Engine with the compose plugin"
cd "$PROJECT_ROOT"
# Warnings fail too: a Dockerfile whose last USER is root is a warning to hadolint (DL3002).
check "hadolint Dockerfile" hadolint --failure-threshold warning Dockerfile
mapfile -t shell_scripts < <(find docker scripts -name '*.sh' -type f | sort)
check "shellcheck scripts/ docker/" shellcheck -x "${shell_scripts[@]}"
check "yamllint" yamllint --strict .
for env in "${ENVIRONMENTS[@]}"; do
	check "docker compose config ($env)" compose_config "$env"
done
check "promtool test rules" docker run --rm --volume "$PROJECT_ROOT/config/prometheus:/etc/prometheus:ro" \
	--entrypoint promtool "${PROMETHEUS_IMAGE:-${IMAGE_MIRROR:-docker.io}/prom/prometheus:v2.55.1}" test rules /etc/prometheus/tests/alerts.test.yml
log "every check passed"
