"""Static checks on every rendered variant: zero findings, or an ignore with a written reason
(see docs/static-checks.md). Needs the checkers, not a Docker daemon."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import yaml

from conftest import VARIANTS, answers, check_jsonschema, require_tool, run
from extensions.model import CAPLESS_COMMAND

pytestmark = pytest.mark.parametrize("variant", VARIANTS)


def test_hadolint(render, variant):
    project = render(variant)
    run(require_tool("hadolint"), "--failure-threshold", "style", "Dockerfile", cwd=project)


def test_shellcheck(render, variant):
    project = render(variant)
    scripts = sorted(str(p.relative_to(project)) for p in project.glob("scripts/**/*.sh"))
    scripts += sorted(str(p.relative_to(project)) for p in project.glob("docker/*.sh"))
    assert "docker/entrypoint.sh" in scripts
    scripts += sorted(str(p.relative_to(project)) for p in project.glob("config/db/*.sh"))
    assert "scripts/compose.sh" in scripts
    run(require_tool("shellcheck"), "-x", "--severity=style", *scripts, cwd=project)


# The host-agents profile's findings (opt-in, docs/security.md): cAdvisor is privileged, reads
# the kernel log and mounts the host's /, /var/run (the Docker socket), /sys and Docker's state.
HOST_AGENTS_FINDINGS = {("cadvisor", rule) for rule in ("CL-0001", "CL-0002", "CL-0013", "CL-0016")}


def compose_lint(project, env: str, tmp_path, profiles: str = "") -> list[dict]:
    """compose-lint's findings at high or above on ENV's merged model (with the project's accepted
    findings, .compose-lint.yml, where it has one)."""
    merged = tmp_path / f"{env}{'-' + profiles if profiles else ''}.yaml"
    merged.write_text(run(project / "scripts" / "compose.sh", env, "config", cwd=project,
                          env={**os.environ, "COMPOSE_PROFILES": profiles}).stdout)
    config = ["--config", str(project / ".compose-lint.yml")] if (project / ".compose-lint.yml").exists() else []
    proc = run(require_tool("compose-lint"), "check", "--format", "json", "--fail-on", "critical", *config, str(merged),
               check=False)
    report = json.loads(proc.stdout)
    findings = report["findings"] if isinstance(report, dict) else report
    return [f for f in findings if f["severity"].lower() in ("high", "critical") and not f.get("suppressed")]


def test_compose_lint_finds_nothing_high_by_default(render, variant, tmp_path):
    """No service of the default stack is host-root equivalent: compose-lint (pinned) finds nothing at
    high or above in any environment. Only an answer opts in (Alloy with prometheus-loki, in the
    rendered .compose-lint.yml), and the host-agents profile is checked to add only its own."""
    project = render(variant)
    for env in answers(project)["environments"]:
        assert compose_lint(project, env, tmp_path) == [], env
        if answers(project)["monitoring"] != "none":
            found = {(f["service"], f["rule_id"]) for f in compose_lint(project, env, tmp_path, "host-agents")}
            assert found == HOST_AGENTS_FINDINGS, found


def test_compose_config_per_environment(render, variant):
    project = render(variant)
    for env in answers(project)["environments"]:
        run(project / "scripts" / "compose.sh", env, "config", "--quiet", cwd=project)


def test_engine_25_file_gives_every_health_check_a_start_interval_on_engine_25_only(render, variant):
    """On Docker Engine 25+ (API 1.44) compose.sh adds compose.engine-25.yaml: every service of every
    environment with a health check polls every 250 ms while it starts, within a start period, and
    every 15 s after. On an older engine (Compose refuses start_interval there) the file stays out,
    and the app's check runs every 5 s throughout."""
    project = render(variant)

    def services(env: str, api: str) -> dict:
        proc = run(project / "scripts" / "compose.sh", env, "config", "--format", "json", cwd=project,
                   env={**os.environ, "ENGINE_API_VERSION": api})
        return json.loads(proc.stdout)["services"]

    for env in answers(project)["environments"]:
        older, newer = services(env, "1.43"), services(env, "1.44")
        assert not [name for name, s in older.items() if "start_interval" in s.get("healthcheck", {})]
        checked = {name for name, s in newer.items() if s.get("healthcheck", {}).get("test")}
        fast = {name for name, s in newer.items() if s.get("healthcheck", {}).get("start_interval") == "250ms"}
        defined_whole_here = set(yaml.safe_load((project / f"compose.{env}.yaml").read_text())["services"]) - set(
            yaml.safe_load((project / "compose.yaml").read_text())["services"])
        assert fast == checked - defined_whole_here, (env, checked, fast)
        assert all(newer[name]["healthcheck"].get("start_period") for name in fast)
        assert {newer[name]["healthcheck"]["interval"] for name in fast} == {"15s"}
        assert {older[name]["healthcheck"]["interval"] for name in older if name.startswith("app-")} == {"5s"}
        assert services(env, "2.0") == newer and services(env, "") == older


def test_compose_files_match_the_compose_spec_schema(render, variant):
    project = render(variant)
    files = sorted(str(p.name) for p in project.glob("compose*.yaml"))
    assert len(files) == 2 + len(answers(project)["environments"])  # compose.yaml, compose.engine-25.yaml, one per env
    check_jsonschema("--builtin-schema", "vendor.compose-spec", *(project / name for name in files))


def test_yamllint(render, variant):
    project = render(variant)
    run(require_tool("yamllint"), "--strict", ".", cwd=project)


def test_prometheus_config_rules_and_rule_tests(render, variant):
    project = render(variant)
    prometheus = project / "config" / "prometheus"
    if answers(project)["monitoring"] == "none":
        assert not prometheus.exists()
        return
    promtool = require_tool("promtool")
    run(promtool, "check", "config", "prometheus.yml", cwd=prometheus)
    run(promtool, "check", "rules", "rules/alerts.yml", cwd=prometheus)
    result = run(promtool, "test", "rules", "alerts.test.yml", cwd=prometheus / "tests")
    assert "SUCCESS" in result.stdout


def test_alertmanager_config(render, variant):
    project = render(variant)
    config = project / "config" / "alertmanager" / "alertmanager.yml"
    if answers(project)["monitoring"] == "none":
        assert not config.exists()
        return
    run(require_tool("amtool"), "check-config", config)


def test_grafana_provisioning(render, variant, tmp_path):
    """Grafana has no offline validator here: data sources and dashboards are checked as data."""
    project = render(variant)
    grafana = project / "config" / "grafana"
    if answers(project)["monitoring"] == "none":
        assert not grafana.exists()
        return
    sources = yaml.safe_load((grafana / "provisioning/datasources/datasources.yml").read_text())["datasources"]
    uids = {source["uid"] for source in sources}
    assert ("loki" in uids) == (answers(project)["monitoring"] == "prometheus-loki")
    for dashboard in (grafana / "dashboards").glob("*.json"):
        model = json.loads(dashboard.read_text())
        assert model["panels"], dashboard
        for panel in model["panels"]:
            assert panel["datasource"]["uid"] in uids
            assert all(target["expr"] for target in panel["targets"])
        # Every panel's PromQL parses: promtool checks it as a recording rule.
        rules = {"groups": [{"name": "panels", "rules": [
            {"record": f"panel_{i}", "expr": target["expr"]}
            for i, panel in enumerate(model["panels"]) for target in panel["targets"]]}]}
        check = tmp_path / f"{dashboard.stem}-panels.yml"
        check.write_text(yaml.safe_dump(rules))
        run(require_tool("promtool"), "check", "rules", check)


def test_blackbox_config(render, variant):
    """Where TLS ends at the proxy and monitoring is on, the blackbox exporter's own check."""
    project = render(variant)
    a = answers(project)
    configs = sorted((project / "config" / "blackbox").glob("*.yml"))
    probed = [e for e in a["environments"] if e != "dev"] if a["monitoring"] != "none" and a["tls"] != "none" else []
    assert [c.stem for c in configs] == sorted(probed)
    for config in configs:
        run(require_tool("prometheus-blackbox-exporter"), "--config.check", f"--config.file={config}")


def test_systemd_units_verify(render, variant, tmp_path):
    """systemd-analyze verify in a scratch root holding the host's units, a stand-in docker.service
    and the project at install_dir, so that ExecStart paths and dependencies resolve."""
    project = render(variant)
    a = answers(project)
    units = sorted(p for p in (project / "deploy" / "systemd").glob("*") if p.suffix in (".service", ".timer"))
    if a["process_manager"] != "systemd":
        assert not units
        return
    backed_up = [e for e in a["environments"] if e != "dev"] if a["database"] != "none" else []
    expected = [f"{a['project_slug']}-{e}.service" for e in a["environments"]]
    expected += [f"{a['project_slug']}-{e}-backup.{kind}" for e in backed_up for kind in ("service", "timer")]
    audited = [e for e in a["environments"] if e != "dev"]  # the daily compliance audit (scripts/audit.sh)
    expected += [f"{a['project_slug']}-{e}-audit.{kind}" for e in audited for kind in ("service", "timer")]
    if a["monitoring"] != "none":
        expected += [f"{a['project_slug']}-{e}-container-metrics.service" for e in a["environments"]]
    assert sorted(u.name for u in units) == sorted(expected)
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/lib/systemd/system/docker.service").write_text(
        "[Unit]\nDescription=stand-in for the Docker Engine unit\n[Service]\nExecStart=/bin/true\n"
    )
    shutil.copytree(project, root / answers(project)["install_dir"].lstrip("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    proc = run(require_tool("systemd-analyze"), "verify", f"--root={root}", *[u.name for u in units])
    # verify exits 0 on unknown keys and similar: any output is a finding.
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
    # Sandboxing: systemd's own exposure score (0 best, 10 worst; an unsandboxed root unit is 9.6).
    # Not lower than 6.8: the units need the Docker socket (root-equivalent) and write the project.
    # The container metrics unit needs neither: it reads /sys/fs/cgroup and writes metrics/ENV/.
    for unit in units:
        if unit.suffix == ".service":
            threshold = 20 if unit.name.endswith("-container-metrics.service") else 70
            score = run(require_tool("systemd-analyze"), "security", "--offline=true", f"--threshold={threshold}", str(unit), check=False)
            assert score.returncode == 0, f"{unit.name}: {score.stdout.splitlines()[-1:]}"


def test_supervisor_config_parses(render, variant, tmp_path):
    """supervisor's own parser reads the program definitions."""
    project = render(variant)
    conf = project / "deploy" / "supervisor" / f"{answers(project)['project_slug']}.conf"
    if answers(project)["process_manager"] != "supervisor":
        assert not conf.exists()
        return
    from supervisor.options import ServerOptions

    # supervisor insists that log directories exist: point /var/log/supervisor at a scratch one.
    logs = tmp_path / "log"
    logs.mkdir()
    copy = tmp_path / conf.name
    copy.write_text(conf.read_text().replace("/var/log/supervisor/", f"{logs}/"))
    main = tmp_path / "supervisord.conf"
    main.write_text(f"[supervisord]\nlogfile=/dev/null\n[include]\nfiles = {copy}\n")
    options = ServerOptions()
    options.configfile = str(main)
    options.process_config(do_usage=False)
    names = sorted(group.name for group in options.process_group_configs)
    a = answers(project)
    metrics = ["", "-container-metrics"] if a["monitoring"] != "none" else [""]
    assert names == sorted(f"{a['project_slug']}-{env}{suffix}" for env in a["environments"] for suffix in metrics)
    for group in options.process_group_configs:
        program = group.process_configs[0]
        if group.name.endswith("-container-metrics"):
            env = group.name[len(a["project_slug"]) + 1:-len("-container-metrics")]
            # Root without capabilities (extensions/model.py CAPLESS_COMMAND; test_scripts runs it).
            assert program.command == f"{CAPLESS_COMMAND} {a['install_dir']}/scripts/container-metrics.sh {env}" and program.autorestart
            continue
        assert program.command.startswith(a["install_dir"] + "/scripts/compose.sh ")
        assert program.stopsignal == 15 and program.stopasgroup


def test_caddyfile_adapts_and_validates(render, variant):
    project = render(variant)
    if answers(project)["proxy"] != "caddy":
        return
    caddy = require_tool("caddy")
    for env in answers(project)["environments"]:
        caddyfile = project / "config" / "caddy" / env / "Caddyfile"
        run(caddy, "fmt", "--diff", caddyfile)
        out = run(caddy, "adapt", "--config", caddyfile, "--adapter", "caddyfile").stdout.replace(" ", "")
        # The upstream name is read from the file the scripts switch, at every request.
        assert '"name":"{file./etc/caddy/active/upstream-name}"' in out
        for colour in ("green", "blue"):
            run("bash", "-c", f'source scripts/lib/common.sh && proxy_write {env} {colour}', cwd=project)
            assert (project / ".deploy" / env / "proxy" / "upstream-name").read_text() == f"app-{colour}"
        shutil.rmtree(project / ".deploy")  # the render is shared with other checks


def test_nginx_routes_by_a_marker_per_colour(render, variant):
    """nginx picks the colour at every request from marker files (app-route.conf, server context);
    proxy_write leaves exactly the active colour's marker, proxy_init makes one only if none exists."""
    project = render(variant)
    a = answers(project)
    if a["proxy"] != "nginx":
        return
    for env in a["environments"]:
        config = project / "config" / "nginx" / env
        assert "include /etc/nginx/deploy/app-route.conf;" in (config / "locations.conf").read_text().splitlines()[1]
        route = (config / "app-route.conf").read_text()
        assert f"set $app_upstream http://app-blue:{a['app_port']};" in route
        # Until a marker exists, a project updated from a release before them routes by its upstream.conf.
        assert route.index("include /etc/nginx/active/upstream*.conf;") < route.index("if (-f /etc/nginx/active/route-app-blue)")
        assert f"if (-f /etc/nginx/active/route-app-green) {{\n    set $app_upstream http://app-green:{a['app_port']};\n}}" in route
        proxy = project / ".deploy" / env / "proxy"

        def markers() -> list[str]:
            return sorted(path.name for path in proxy.glob("route-*"))

        def script(command: str) -> None:
            run("bash", "-c", f"source scripts/lib/common.sh && {command}", cwd=project)

        for colour in ("green", "blue", "blue", "green"):
            script(f"proxy_write {env} {colour}")
            assert markers() == [f"route-app-{colour}"]
        (project / ".deploy" / env / "active-colour").write_text("blue\n")
        script(f"proxy_init {env}")
        assert markers() == ["route-app-green"], "an existing marker is never replaced by init"
        shutil.rmtree(proxy)
        script(f"proxy_init {env}")
        assert markers() == ["route-app-blue"]
    shutil.rmtree(project / ".deploy")  # the render is shared with other checks


def test_cron_schedule(render, variant):
    """With supervisor or no process manager, backups are scheduled by a cron.d file."""
    project = render(variant)
    a = answers(project)
    cron = project / "deploy" / "cron" / f"{a['project_slug']}-backup"
    if a["process_manager"] == "systemd" or a["database"] == "none":
        assert not cron.exists()
        return
    jobs = [line.split() for line in cron.read_text().splitlines() if line and not line.startswith("#") and "=" not in line.split()[0]]
    hour, minute = a["backup_time"].split(":")
    assert [job[5:7] for job in jobs] == [["root", f"{a['install_dir']}/scripts/scheduled-backup.sh"] for e in a["environments"] if e != "dev"]
    assert all(job[:5] == [str(int(minute)), str(int(hour)), "*", "*", "*"] for job in jobs)


# --- the rendered pipeline (answer `ci`) and Renovate -----------------------------------------------

USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)", re.MULTILINE)


def test_pipeline_files_validate_and_pin_every_action(render, variant):
    """Workflows against the platforms' schemas; zizmor finds nothing at medium or above; every
    action is pinned by a full commit SHA; no pipeline files for `ci: none`."""
    project = render(variant)
    platform = answers(project).get("ci", "github")
    workflows = sorted(str(p.relative_to(project)) for p in project.glob(".github/workflows/*.yml"))
    gitlab = project / ".gitlab-ci.yml"
    if platform == "none":
        assert not workflows and not gitlab.exists() and not (project / "scripts" / "ci").exists()
        return
    assert (project / "scripts" / "ci" / "lint.sh").exists() and (project / "scripts" / "ci" / "test.sh").exists()
    if platform == "gitlab":
        assert not workflows
        check_jsonschema("--builtin-schema", "vendor.gitlab-ci", gitlab)
        return
    assert not gitlab.exists() and ".github/workflows/ci.yml" in workflows
    check_jsonschema("--builtin-schema", "vendor.github-workflows", *(project / path for path in workflows))
    zizmor = run(require_tool("zizmor"), "--offline", "--min-severity", "medium", "--format", "plain", ".github/workflows",
                 cwd=project, check=False)
    assert zizmor.returncode == 0 and "No findings" in zizmor.stdout + zizmor.stderr, zizmor.stdout + zizmor.stderr
    uses = [u for path in workflows for u in USES.findall((project / path).read_text())]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses


def test_renovate_config_validates_and_finds_every_image(render, variant):
    """renovate.json against Renovate's schema, and its regex managers (run here with Python's re)
    find every image the compose files pin and every base image of the Dockerfile."""
    project = render(variant)
    check_jsonschema("--builtin-schema", "vendor.renovate", project / "renovate.json")
    config = json.loads((project / "renovate.json").read_text())
    found: dict[str, set[str]] = {}
    for manager in config["customManagers"]:
        files = [re.compile(p.strip("/")) for p in manager["managerFilePatterns"]]
        patterns = [re.compile(m.replace("(?<", "(?P<")) for m in manager["matchStrings"]]
        for path in project.rglob("*"):
            relative = str(path.relative_to(project))
            if path.is_file() and any(f.search(relative) for f in files):
                for pattern in patterns:
                    for match in pattern.finditer(path.read_text()):
                        found.setdefault(relative, set()).add(match.groupdict().get("currentValue"))
    compose_tags = set(re.findall(r"\$\{IMAGE_MIRROR:-[^}]+\}/[a-z0-9._/-]+:([A-Za-z0-9._-]+)", (project / "compose.yaml").read_text()))
    assert compose_tags and compose_tags <= found.get("compose.yaml", set()), (compose_tags, found.get("compose.yaml"))
    base_tags = set(re.findall(r"^ARG \w+_IMAGE=[^:\s]+:(\S+)", (project / "Dockerfile").read_text(), re.MULTILINE))
    assert base_tags and base_tags <= found.get("Dockerfile", set())
    # The cluster targets pin the same images in their own files: Renovate must move them together.
    swarm_lib = project / "scripts" / "lib" / "swarm.sh"
    if swarm_lib.exists():
        swarm_tags = set(re.findall(r"_IMAGE\]=[^:\s]+:([A-Za-z0-9._-]+)", swarm_lib.read_text()))
        assert swarm_tags and swarm_tags <= found.get("scripts/lib/swarm.sh", set()), swarm_tags
    for manifest in sorted((project / "kubernetes").rglob("*.yaml")) if (project / "kubernetes").exists() else []:
        relative = str(manifest.relative_to(project))
        tags = set(re.findall(r"image: [a-z0-9.-]+\.[a-z]+/[^:\s]+:([A-Za-z0-9._-]+)", manifest.read_text()))
        assert tags <= found.get(relative, set()), (relative, tags)


# What a service of a Swarm stack may say: the keys `docker stack deploy` applies. Others are
# ignored with a warning (security_opt, shm_size) or silently (tmpfs, group_add is refused).
SWARM_SERVICE_KEYS = {"image", "user", "read_only", "cap_drop", "init", "stop_grace_period", "entrypoint", "command",
                      "environment", "env_file", "secrets", "configs", "volumes", "healthcheck", "networks", "ports",
                      "deploy"}


def test_swarm_stacks_load_as_docker_stack_deploy_reads_them(render, variant, tmp_path):
    """`docker stack config` (the CLI's own loader) accepts every environment's stack, with the
    variables scripts/lib/swarm.sh sets; every key is one Swarm applies; object names fit Swarm's 64."""
    project = render(variant)
    if "swarm" not in (answers(project).get("orchestrators") or []):
        assert not (project / "swarm").exists()
        return
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    for env in answers(project)["environments"]:
        shutil.copy(copy / "env" / f"{env}.app.env.example", copy / "env" / f"{env}.app.env")
        text = (copy / "swarm" / f"{env}.yaml").read_text()
        stack = yaml.safe_load(text)
        for name, service in stack["services"].items():
            assert set(service) <= SWARM_SERVICE_KEYS, f"{env}: {name} says {set(service) - SWARM_SERVICE_KEYS}"
        for spec in stack.get("secrets", {}).values():
            secret = copy / "swarm" / spec["file"]
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.write_text("not a real secret\n")
        variables = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
        values = {v: "registry.example/team/image:1.0" if v.endswith(("_IMAGE", "_REF")) else "0123456789ab" for v in variables}
        proc = run(require_tool("docker"), "stack", "config", "--compose-file", f"swarm/{env}.yaml", cwd=copy,
                   env={**os.environ, **values})
        loaded = yaml.safe_load(proc.stdout)
        assert set(loaded["services"]) == set(stack["services"])
        names = [spec["name"] for kind in ("secrets", "configs") for spec in loaded.get(kind, {}).values()]
        assert names and all(len(name) <= 64 for name in names), names
        assert len(set(names)) == len(names)
