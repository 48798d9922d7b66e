"""What each rendered variant contains, read from the files and from Compose's merged model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, VARIANTS, answers, compose_config

# Documented exceptions (docs/security.md): services that cannot run non-root, read-only or without
# a health check, and why.
ROOT_ALLOWED = {"cadvisor", "alloy"}  # host cgroups / Docker socket
# Networks with a route out outside dev (extensions/model.py OPEN_NETWORKS).
OPEN_NETWORKS = {"edge", "outbound", "grafana-web"}
# Who may share a network with whom (docs/security.md, "Networks"): besides these pairs, no two
# services of a stack share one. Prometheus scrapes every target; an exporter reaches its target.
MAY_SHARE = {
    frozenset(pair) for pair in [
        ("proxy", "app"), ("app", "migrate"), ("app", "db"), ("app", "cache"), ("migrate", "db"), ("migrate", "cache"), ("db", "cache"),
        ("db-roles", "db"), ("db-archive", "db"), ("db-backup", "db"), ("db-roles", "app"), ("db-roles", "migrate"), ("db-roles", "cache"),
        ("prometheus", "alertmanager"), ("prometheus", "grafana"), ("prometheus", "loki"), ("prometheus", "alloy"),
        ("alertmanager", "grafana"), ("alertmanager", "loki"), ("alertmanager", "alloy"), ("grafana", "loki"),
        ("grafana", "alloy"), ("loki", "alloy"), ("proxy", "grafana"),
        ("prometheus", "app"), ("prometheus", "proxy"), ("prometheus", "db"), ("prometheus", "cache"),
        ("prometheus", "node-exporter"), ("prometheus", "cadvisor"), ("prometheus", "db-exporter"),
        ("prometheus", "cache-exporter"), ("prometheus", "proxy-exporter"), ("prometheus", "blackbox-exporter"),
        ("db-exporter", "db"), ("cache-exporter", "cache"), ("proxy-exporter", "proxy"),
        ("blackbox-exporter", "proxy"), ("blackbox-exporter", "app"), ("blackbox-exporter", "proxy-exporter"),
        ("node-exporter", "cadvisor"),  # the host's agents: one target, the host
    ]
}
NO_HEALTHCHECK = {"migrate", "db-roles", "db-backup", "proxy-exporter"}  # one-off jobs / FROM scratch image
ONE_OFFS = {"migrate", "db-roles", "db-backup"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_files_follow_the_answers(render, variant):
    project = render(variant)
    a = answers(project)
    envs = a["environments"]
    assert sorted(p.name for p in project.glob("compose.*.yaml")) == sorted([f"compose.{e}.yaml" for e in envs] + ["compose.engine-25.yaml"])
    assert sorted(p.name for p in (project / "env").glob("*.example")) == sorted(
        name for e in envs for name in (f"{e}.env.example", f"{e}.app.env.example"))
    for path in ("Dockerfile", ".dockerignore", "compose.yaml", "scripts/compose.sh", "scripts/init-env.sh",
                 "scripts/lib/common.sh", "docker/entrypoint.sh", "README.md", ".gitignore", ".copier-answers.yml"):
        assert (project / path).is_file(), path
    proxy_dir = {"nginx": "nginx", "caddy": "caddy", "traefik": "traefik"}[a["proxy"]]
    assert sorted(p.name for p in (project / "config" / proxy_dir).iterdir()) == sorted(envs)
    assert (project / "config/loki").exists() == (a["monitoring"] == "prometheus-loki")
    units = sorted(p.name for p in project.glob("deploy/systemd/*.service")
                   if not p.name.endswith(("-backup.service", "-audit.service", "-container-metrics.service")))
    assert units == (sorted(f"{a['project_slug']}-{e}.service" for e in envs) if a["process_manager"] == "systemd" else [])
    # Each container's CPU and memory (scripts/container-metrics.sh), by whatever runs the host's jobs.
    monitored = a["monitoring"] != "none"
    assert (project / "scripts/container-metrics.sh").exists() == monitored
    metrics_units = sorted(p.name for p in project.glob("deploy/systemd/*-container-metrics.service"))
    assert metrics_units == sorted(f"{a['project_slug']}-{e}-container-metrics.service" for e in envs
                                   if monitored and a["process_manager"] == "systemd")
    cron_metrics = project / "deploy/cron" / f"{a['project_slug']}-container-metrics"
    assert cron_metrics.exists() == (monitored and a["process_manager"] == "none")
    if cron_metrics.exists():
        assert [line.split()[-2:] for line in cron_metrics.read_text().splitlines() if "container-metrics.sh" in line
                and not line.startswith("#")] == [[e, "--once"] for e in envs]
    if a["process_manager"] == "supervisor":
        supervisor = (project / "deploy/supervisor" / f"{a['project_slug']}.conf").read_text()
        assert ("-container-metrics]" in supervisor) == monitored
    for env in envs:
        compose_env = yaml.safe_load((project / f"compose.{env}.yaml").read_text())
        parents = {name: spec.get("cgroup_parent") for name, spec in compose_env["services"].items()}
        assert parents == {name: f"{a['project_slug']}-{env}-{name}.slice" if monitored else None for name in parents}
    data_scripts = {"backup.sh", "restore.sh", "verify-backup.sh", "migrate.sh", "scheduled-backup.sh", "db-roles.sh", "lib/db.sh",
                    "lib/backups.sh"}
    for script in data_scripts:
        assert (project / "scripts" / script).exists() == (a["database"] != "none"), script
    assert (project / "deploy/supervisor").exists() == (a["process_manager"] == "supervisor")
    audited = [e for e in envs if e != "dev"]
    cron_audit = project / "deploy/cron" / f"{a['project_slug']}-audit"
    assert cron_audit.exists() == (a["process_manager"] != "systemd" and bool(audited))
    if cron_audit.exists():
        assert [line.split()[-3:-2] for line in cron_audit.read_text().splitlines() if "scripts/audit.sh" in line] == [[e] for e in audited]
    assert (project / "scripts/audit.sh").stat().st_mode & 0o111 and (project / "docs/compliance.md").is_file()
    example = {"python": "app/main.py", "node": "server.js", "go": "main.go"}[a["runtime"]]
    assert (project / example).exists() == a["example_app"]
    has_migrations = a["example_app"] and a["database"] != "none" and a["runtime"] != "go"
    assert (project / "migrations").exists() == has_migrations
    assert "/env/*.env" in (project / ".gitignore").read_text() and "/secrets/" in (project / ".gitignore").read_text()
    # Every entry script runs as a command (Copier keeps the template file's mode).
    for script in project.glob("scripts/*.sh"):
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


@pytest.mark.parametrize("variant", VARIANTS)
def test_dockerfile_is_multi_stage_non_root_and_cached(render, variant):
    project = render(variant)
    dockerfile = (project / "Dockerfile").read_text()
    assert "# syntax=" not in dockerfile
    a = answers(project)
    runtime = a["runtime"] if a["runtime"] != "python" else f"python-{a['python_installer']}"
    # (base image argument, or "" for a stage that starts from another stage; stage name)
    stages = re.findall(r"^FROM (?:\$\{(\w+)\}|[\w-]+(?:\$\{BUILD_ENV_STAGE\}|\$\{(?:BUILD|RUNTIME)_PACKAGES:\+-packages\})?) AS ([\w-]+)$",
                        dockerfile, re.M)
    # Go also lays out the runtime's few files (busybox and its links) in a stage of its own; Node
    # installs the production dependencies (deps) beside the app's build script (build), both from
    # the package files (base), which a stage of their own picks out of the source (package-files,
    # each workspace's package.json too), as pip's build takes the requirement files.
    # Each stage that fetches dependencies twice, without and with the build's credentials, one of
    # them chosen by BUILD_ENV_STAGE (test_only_builds_with_credentials_mount_the_secret).
    # The build's and the runtime's system packages come in stages of their own (-packages), taken
    # only when the build argument lists some (test_e2e_shapes.py: test_system_packages_reach_only_their_stages_and_cost_no_step_when_unset).
    build_system, runtime_system = ["build-system", "build-system-packages"], ["runtime-system", "runtime-system-packages"]
    python = [*build_system, "build", "build-credentials", "build-chosen", *runtime_system, "runtime"]
    assert [name for _, name in stages] == {"go": ["rootfs", *build_system, "build", "build-credentials", "build-chosen", "runtime"],
                                            "node": ["package-files", *build_system, "base", "deps", "build", "deps-credentials",
                                                     "build-credentials", "deps-chosen", "build-chosen", *runtime_system, "runtime"],
                                            "python-pip": ["requirements", *python], "python-uv": python,
                                            "python-poetry": python, "python-pipenv": python}[runtime]
    # Base images are build arguments with pinned defaults, declared before the first FROM.
    head = dockerfile.split("\nFROM ", 1)[0]
    for arg in filter(None, (arg for arg, _ in stages)):
        # A pinned image, or (Go's runtime) scratch: nothing but the static binary and busybox.
        assert re.search(rf"^ARG {arg}=([\w./-]+:[\w.-]+|scratch)$", head, re.M), arg
    before_runtime, runtime_stage = re.split(r" AS runtime\n", dockerfile, maxsplit=1)
    assert "--mount=type=cache" in before_runtime
    assert re.search(r"^USER 10001:10001$", runtime_stage, re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[", runtime_stage, re.M)
    # No HTTP client installed for the health check: the runtime asks the app itself (Python,
    # Node.js), or, from scratch (Go), the static busybox copied in from the rootfs stage does.
    assert "curl" not in runtime_stage
    if runtime == "go":
        assert "COPY --from=rootfs /build/rootfs /" in runtime_stage and "busybox" in dockerfile
        # That stage downloads nothing (a cold build's cost is the Go build): busybox from its
        # image, the CA bundle from the build image.
        rootfs_stage = dockerfile.split(" AS rootfs", 1)[1].split("\nFROM ", 1)[0]
        assert "apt-get" not in rootfs_stage and "FROM ${BUSYBOX_IMAGE} AS rootfs" in dockerfile
        assert "COPY --from=build-chosen /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/" in runtime_stage
    else:
        assert "wget" not in runtime_stage
    if runtime == "node":
        # The production dependencies, never the build stage's (development ones included).
        # Every node_modules (the root's and each workspace's), moved to /build/deps by docker/node-install.sh.
        assert "COPY --from=deps-chosen /build/deps/ ./" in runtime_stage
        assert "find . -name node_modules -prune -type d -exec rm -rf {} +" in re.split(r" AS build\n", dockerfile, maxsplit=1)[1].split("\nFROM ", 1)[0]
    assert "org.opencontainers.image.version" in runtime_stage
    # What a stage hands another is never a directory at the image's root: BuildKit checksums a
    # COPY --from source by walking the directory holding it (the root: the whole base image, 0.6 s
    # on the Node image each time).
    handed_over = re.findall(r"^COPY --from=([\w-]+) (\S+)", dockerfile, re.M)
    assert handed_over and all(stage in {name for _, name in stages} for stage, _ in handed_over), handed_over
    assert all(source.strip("/").count("/") >= 1 for _, source in handed_over), handed_over
    # No compiler or package-manager cache arrives in the runtime stage.
    assert "pip install" not in runtime_stage and "npm ci" not in runtime_stage and "BUILD_PACKAGES" not in runtime_stage
    # No apt-get there: the runtime's only installs are the user's RUNTIME_PACKAGES (shared
    # libraries), in the stage it starts from when they are listed, which drops the lists.
    assert "apt-get" not in runtime_stage
    installs = [line for line in before_runtime.split(" AS runtime-system-packages\n", 1)[-1].split("\nFROM ", 1)[0].splitlines()
                if "apt-get install" in line]
    assert runtime == "go" or installs == ["RUN apt-get update && apt-get install -y --no-install-recommends $RUNTIME_PACKAGES "
                                           "&& rm -rf /var/lib/apt/lists/*"], installs
    ignored = (project / ".dockerignore").read_text().split()
    assert {"secrets/", "env/", "backups/", ".git"} <= set(ignored)


# What fetches packages in the image's build: each such step gets the build's credentials.
FETCHES = re.compile(r"pip (--python \S+ )?install|uv sync|uv pip install|poetry lock|pipenv lock|node-install\.sh (production|all)|go mod download|go build")


def stages_of(dockerfile: str) -> dict[str, list[str]]:
    """Each stage's steps (continuation lines joined, comments left out), by stage name."""
    stages = {}
    steps = "\n".join(line for line in dockerfile.replace("\\\n", " ").splitlines() if not line.startswith("#"))
    for block in re.split(r"\n(?=FROM )", steps):
        name = re.match(r"FROM \S+ AS ([\w-]+)", block)
        if name:
            stages[name.group(1)] = re.split(r"\n(?=[A-Z]+ )", block)[1:]
    return stages


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_step_that_fetches_dependencies_gets_the_builds_credentials_and_no_other(render, variant):
    """In the -credentials copy of each dependency stage, which BUILD_ENV_STAGE chooses when
    BUILD_ENV_FILE is set; the copy built by default is the same without the secret mount."""
    dockerfile = (render(variant) / "Dockerfile").read_text()
    stages = stages_of(dockerfile)
    with_credentials = [name for name in stages if name.endswith("-credentials")]
    assert with_credentials
    for name in with_credentials:
        plain = name.removesuffix("-credentials")
        runs = [step for step in stages[name] if step.startswith("RUN ")]
        fetching = [step for step in runs if FETCHES.search(step)]
        assert fetching and [step for step in runs if "id=build_env" in step] == fetching, name
        for step in fetching:
            # Read from the secret in the step itself (a layer keeps neither the mount nor the
            # environment), before the first command that fetches.
            assert "--mount=type=bind,source=docker/build-env.sh,target=/tmp/build-env.sh" in step
            assert re.search(r"\. /tmp/build-env\.sh\s+&&", step).start() < FETCHES.search(step).start(), step
        # The default copy: the same steps, without the secret.
        assert [step.replace("--mount=type=secret,id=build_env ", "") for step in stages[name]] == stages[plain], name
        assert f"FROM {plain}${{BUILD_ENV_STAGE}} AS {plain}-chosen" in dockerfile
    assert "id=build_env" not in "".join(step for name, steps in stages.items() if not name.endswith("-credentials") for step in steps)
    assert re.search(r"^ARG BUILD_ENV_STAGE=$", dockerfile.split("\nFROM ", 1)[0], re.M)


# What needs the network beyond fetching dependencies: Debian packages, and the app's own build
# script (a bundler may fetch fonts or a CDN's files).
NEEDS_NETWORK = re.compile(FETCHES.pattern + r"|apt-get install|npm run ")


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_steps_that_fetch_nothing_run_without_a_network(render, variant):
    """Picking the package files out of the source, laying out Go's runtime files, adding the app's
    user: no network (nothing in the build's source can reach out there, and such a step starts in
    half the time); every step that fetches keeps the default network."""
    stages = stages_of((render(variant) / "Dockerfile").read_text())
    runs = [step for steps in stages.values() for step in steps if step.startswith("RUN ")]
    offline = [step for step in runs if not NEEDS_NETWORK.search(step)]
    assert offline and all(step.startswith("RUN --network=none ") for step in offline), offline
    assert not any("--network" in step for step in runs if NEEDS_NETWORK.search(step))


@pytest.mark.parametrize("variant", VARIANTS)
def test_prometheus_scrapes_the_port_the_app_serves_metrics_on(render, variant):
    """metrics_port (app_port by default) for the app's metrics; the health path's, on app_port,
    for an app without metrics. The image exposes both ports."""
    project = render(variant)
    a = answers(project)
    app_port, metrics_port = int(a["app_port"]), int(a.get("metrics_port") or a["app_port"])
    exposed = re.search(r"^EXPOSE (.+)$", (project / "Dockerfile").read_text(), re.M).group(1).split()
    prometheus = project / "config" / "prometheus" / "prometheus.yml"
    if not prometheus.exists():
        assert exposed == [str(app_port)]
        return
    job = next(j for j in yaml.safe_load(prometheus.read_text())["scrape_configs"] if j["job_name"] == "app")
    scraped = a.get("metrics_path", "/metrics") != ""
    assert job["dns_sd_configs"][0]["port"] == (metrics_port if scraped else app_port)
    assert exposed == sorted({str(app_port), str(metrics_port if scraped else app_port)}, key=int)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_model_per_environment(render, variant):
    project = render(variant)
    a = answers(project)
    for env in a["environments"]:
        model = compose_config(project, env)
        services = model["services"]
        assert model["name"] == f"{a['project_slug']}-{env}"
        for name, service in services.items():
            where = f"{env}/{name}"
            limits = service["deploy"]["resources"]["limits"]
            assert float(limits["cpus"]) > 0 and int(limits["memory"]) > 0 and int(limits["pids"]) >= 64, where
            assert service["logging"]["options"]["max-size"], where
            if name not in NO_HEALTHCHECK:
                assert service["healthcheck"].get("test"), where
            restart = service.get("restart", "no")
            if env == "dev" or name in ONE_OFFS:
                assert restart == "no", where
            else:
                assert restart in {"always", "unless-stopped"}, where
            if name != "cadvisor":
                assert service.get("read_only") is True, where
                assert service.get("cap_drop") == ["ALL"], where
            assert "no-new-privileges:true" in service.get("security_opt", []), where
            user = service.get("user", "")
            acme_proxy = name == "proxy" and a["tls"] == "acme"
            if name not in ROOT_ALLOWED and not acme_proxy:
                assert user and not user.startswith("0:"), where
            for condition in service.get("depends_on", {}).values():
                assert condition["condition"] in {"service_healthy", "service_completed_successfully"}, where
            # Secrets are files: no password or key in an environment value.
            for key, value in (service.get("environment") or {}).items():
                assert not re.search(r"PASSWORD$|SECRET$|_KEY$", key), f"{where}: {key}"
                assert "://" not in str(value) or "@" not in str(value), f"{where}: {key}"
        runtime_secrets = {name: secret for name, secret in model.get("secrets", {}).items() if name != "build_env"}
        for secret in runtime_secrets.values():
            assert secret["file"].startswith(str(project / "secrets" / env)), secret
        # The build's credentials: none unless BUILD_ENV_FILE names them; the app's build alone
        # reads them, no running container.
        assert model["secrets"]["build_env"]["file"] == "/dev/null"
        assert [name for name, s in services.items()
                if any(secret["source"] == "build_env" for secret in (s.get("build") or {}).get("secrets", []))] == ["app-blue"]
        assert not any(secret["source"] == "build_env" for s in services.values() for secret in s.get("secrets", []))
        # Without it the build's dependency stages are the copies without the secret mount.
        assert services["app-blue"]["build"]["args"]["BUILD_ENV_STAGE"] == ""
        # Outside dev only the proxy publishes ports, and Grafana on loopback unless it is public;
        # the database never does.
        published = {name for name, s in services.items() if s.get("ports")}
        loopback_only = all(p["host_ip"] == "127.0.0.1" for name, s in services.items() if name != "proxy" for p in s.get("ports", []))
        assert loopback_only
        if env == "dev":
            assert "proxy" in published
        else:
            private_grafana = "grafana" in services and not a.get("grafana_public")
            assert published == {"proxy"} | ({"grafana"} if private_grafana else set())
            for network, spec in model["networks"].items():
                assert spec.get("internal", False) == (network not in OPEN_NETWORKS), network
        # The app: two colours (both strategies), of which only blue runs before a deploy.
        apps = ["app-blue", "app-green"]
        assert [name for name in services if name.startswith("app")] == apps
        expected_replicas = 1 if env == "dev" else (min(2, a["app_replicas"]) if env == "staging" else a["app_replicas"])
        for name in apps:
            app = services[name]
            if "db" in services:
                assert app["depends_on"]["db"]["condition"] == "service_healthy"
            assert app["environment"]["PORT"] == str(a["app_port"])
            assert app["image"].startswith(a["image_name"] + ":")
            assert ("build" in app) == (name != "app-green"), "one service builds the shared image"
            assert app["deploy"]["replicas"] == (0 if name == "app-green" else expected_replicas)
            # The proxy must not find a colour by "app"; Prometheus (its scrape network) does.
            for network, spec in app["networks"].items():
                assert ("app" in ((spec or {}).get("aliases") or [])) == (network == "scrape-app"), network
        assert "depends_on" not in services["proxy"] or not set(services["proxy"]["depends_on"]) & set(apps)
        volumes = [v["target"] for v in services["proxy"]["volumes"]]
        assert any(t.endswith("/active") for t in volumes), volumes


@pytest.mark.parametrize("variant", VARIANTS)
def test_env_examples_hold_settings_not_secrets(render, variant):
    project = render(variant)
    compose_keys = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", "".join(p.read_text() for p in project.glob("compose*.yaml"))))
    for example in (project / "env").glob("*.env.example"):
        env = example.name.split(".")[0]
        settings = dict(line.split("=", 1) for line in example.read_text().splitlines() if line and not line.startswith("#"))
        assert not any(re.search(r"PASSWORD|SECRET|TOKEN", key) for key in settings), example
        if example.name.endswith(".app.env.example"):
            # The app's environment: its settings, none of Compose's.
            assert settings["APP_ENV"] in {"development", "staging", "production"} and settings["LOG_LEVEL"]
            assert not set(settings) & compose_keys, example
        else:
            # Compose's settings, which the app does not see, and the scripts' own (SCRIPT_SETTINGS).
            script_keys = set(re.search(r"^SCRIPT_SETTINGS=\((.*)\)$", (project / "scripts/lib/common.sh").read_text(),
                                        re.MULTILINE).group(1).split())
            assert set(settings) <= compose_keys | script_keys, set(settings) - compose_keys - script_keys
            assert settings["APP_IMAGE"] == answers(project)["image_name"]
            assert (settings["BIND_ADDRESS"] == "127.0.0.1") == (env == "dev")
    for env in answers(project)["environments"]:
        services = yaml.safe_load((project / f"compose.{env}.yaml").read_text())["services"]
        readers = {name for name, service in services.items() if "env_file" in service}
        assert readers == {n for n in services if n.startswith("app-") or n == "migrate"}, readers
        assert all(services[name]["env_file"] == [f"env/{env}.app.env"] for name in readers)


def test_answers_file_records_every_question(render):
    """.copier-answers.yml holds every answer, so that `copier update` can replay them."""
    project = render("defaults")
    recorded = answers(project)
    questions = [key for key in yaml.safe_load((ROOT / "copier.yml").read_text()) if not key.startswith("_")]
    # Asked only when tls is "acme", alert_receiver is "email", or orchestrators has kubernetes.
    not_asked = {"acme_email", "alert_email_to", "alert_email_from", "alert_smtp_smarthost", "alert_smtp_username",
                 "app_max_replicas", "kubernetes_ingress_class", "kubernetes_ingress_namespace",
                 "kubernetes_monitoring_namespace", "kubernetes_cluster_issuer", "kubernetes_postgres",
                 "kubernetes_cnpg_namespace", "kubernetes_backup_destination", "kubernetes_backup_endpoint"}
    assert recorded["_src_path"]
    assert sorted(key for key in recorded if not key.startswith("_")) == sorted(set(questions) - not_asked)
    assert recorded["project_slug"] == "my-service"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_alert_links_to_a_runbook_section(render, variant):
    project = render(variant)
    rules = project / "config" / "prometheus" / "rules" / "alerts.yml"
    if not rules.exists():
        return
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in (project / "README.md").read_text().splitlines() if line.startswith("#")}
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            page, anchor = rule["annotations"]["runbook"].split("#")
            assert page == "README.md" and anchor in headings, rule["alert"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_alert_receiver_and_its_secret_files(render, variant):
    """The receiver chosen at copy time; its credentials only ever as secret files."""
    project = render(variant)
    a = answers(project)
    config = project / "config" / "alertmanager" / "alertmanager.yml"
    if a["monitoring"] == "none":
        assert not config.exists()
        return
    receivers = yaml.safe_load(config.read_text())["receivers"]
    assert [r["name"] for r in receivers] == ["default"]
    receiver = a["alert_receiver"]
    expected_secrets = {"webhook": {"alert_webhook_url"}, "email": {"alert_smtp_password"} if a.get("alert_smtp_username") else set(),
                        "none": set()}[receiver]
    if receiver == "webhook":
        assert receivers[0]["slack_configs"][0]["api_url_file"] == "/run/secrets/alert_webhook_url"
    elif receiver == "email":
        assert receivers[0]["email_configs"][0]["to"] == a["alert_email_to"]
    else:
        assert set(receivers[0]) == {"name"}
    assert "REPLACE" not in config.read_text() and "hooks.slack.com" not in config.read_text()
    for env in a["environments"]:
        alertmanager = compose_config(project, env)["services"]["alertmanager"]
        # Its web.config.file (basic auth on its API) besides the receiver's credentials.
        assert {s["source"] for s in alertmanager.get("secrets", [])} == expected_secrets | {"alertmanager_web_config"}
        assert alertmanager["user"].endswith(":10001"), "reads the 0640 secret files through their group"


def _mounted_config_text(project, service: dict) -> str:
    """Text of the project files a service mounts (its configuration), for references to secrets."""
    texts = []
    for volume in service.get("volumes", []):
        source = Path(volume.get("source", ""))
        if volume.get("type") == "bind" and source.is_relative_to(project) and source.exists():
            files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
            texts += [p.read_text(errors="ignore") for p in files]
    return "\n".join(texts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_secret_is_mounted_only_where_it_is_read(render, variant):
    """A secret file reaches a container only if that container reads it: its path appears in the
    service's environment (*_FILE, the app's entrypoint reads those), command, entrypoint or health
    check, or in a configuration file the service mounts. Independent of the model that mounts them."""
    project = render(variant)
    for env in answers(project)["environments"]:
        model = compose_config(project, env)
        for name, service in model["services"].items():
            definition = json.dumps({k: service.get(k) for k in ("environment", "command", "entrypoint", "healthcheck")})
            config = _mounted_config_text(project, service)
            if name == "db":  # the backup scripts run the database's client in its container
                config += (project / "scripts" / "lib" / "db.sh").read_text()
            for secret in service.get("secrets", []):
                path = secret.get("target") or f"/run/secrets/{secret['source']}"
                assert path in definition or path in config, f"{env}/{name} is given {secret['source']} but never reads it"


DRIVERS = {"python": {"postgres": "psycopg", "mariadb": "pymysql", "redis": "redis"},
           "node": {"postgres": "pg", "mariadb": "mysql2", "redis": "redis"}}


# The lock file of each Python installer.
PYTHON_LOCKS = {"pip": "requirements.txt", "uv": "uv.lock", "poetry": "poetry.lock", "pipenv": "Pipfile.lock"}


def locked_names(lock: Path) -> set[str]:
    """Package names a lock file pins, read as its format has them."""
    text = lock.read_text()
    if lock.name == "package-lock.json":
        return {path.rsplit("node_modules/", 1)[1] for path in json.loads(text)["packages"] if path}
    if lock.name == "Pipfile.lock":
        return set(json.loads(text)["default"])
    if lock.name == "requirements.txt":
        return set(re.findall(r"^([a-z0-9][a-z0-9._-]*)==", text, re.M))
    return set(re.findall(r'^name = "([^"]+)"', text, re.M))  # uv.lock, poetry.lock


def _locked_packages(project, a) -> set[str]:
    """Package names a render's lock file pins."""
    if a["runtime"] == "node":
        lock = json.loads((project / "package-lock.json").read_text())
        assert lock["packages"][""]["dependencies"] == json.loads((project / "package.json").read_text())["dependencies"]
        return locked_names(project / "package-lock.json")
    return locked_names(project / PYTHON_LOCKS[a["python_installer"]])


@pytest.mark.parametrize("variant", VARIANTS)
def test_example_dependencies_carry_only_the_drivers_in_use(render, variant):
    """A Node app without a database has no pg or mysql2; a PostgreSQL app no MariaDB driver."""
    project = render(variant)
    a = answers(project)
    if not a["example_app"] or a["runtime"] == "go":
        return
    locked = _locked_packages(project, a)
    for choice, package in DRIVERS[a["runtime"]].items():
        wanted = choice in (a["database"], a["cache"])
        assert (package in locked) == wanted, f"{package} locked: {package in locked}, wanted: {wanted}"
    manifest = ("package.json" if a["runtime"] == "node" else
                {"pip": "requirements.in", "pipenv": "Pipfile"}.get(a["python_installer"], "pyproject.toml"))
    text = (project / manifest).read_text()
    for choice, package in DRIVERS[a["runtime"]].items():
        assert (f'"{package}' in text or f"\n{package}" in text) == (choice in (a["database"], a["cache"])), package
    assert (project / ("migrate.js" if a["runtime"] == "node" else "app/migrate.py")).exists() == (a["database"] != "none")


@pytest.mark.parametrize("combination", sorted(p.name for p in (ROOT / "template/_includes/locks").iterdir()))
def test_each_lock_set_pins_exactly_its_drivers(combination):
    """The lock sets tests/lab/example_locks.py made: one per database and cache choice."""
    database, cache = combination.split("-")
    directory = ROOT / "template/_includes/locks" / combination
    assert sorted(p.name for p in directory.iterdir()) == ["Pipfile", "Pipfile.lock", "package-lock.json", "poetry.lock",
                                                           "requirements.txt", "uv.lock"]
    npm = locked_names(directory / "package-lock.json")
    for choice, package in DRIVERS["node"].items():
        assert (package in npm) == (choice in (database, cache)), (combination, package)
    for name, lock in PYTHON_LOCKS.items():
        locked = locked_names(directory / lock)
        for choice, package in DRIVERS["python"].items():
            assert (package in locked) == (choice in (database, cache)), (combination, name, package)
    for lock in directory.iterdir():
        # Included by a template: nothing in it may look like Jinja but the project's name.
        text = lock.read_text().replace("{{ project_slug }}", "")
        assert not re.search(r"\{\{|\{%|\{#", text), lock.name


def role(name: str) -> str:
    return "app" if name.startswith("app-") else name


@pytest.mark.parametrize("variant", VARIANTS)
def test_services_share_networks_only_where_one_must_reach_the_other(render, variant):
    project = render(variant)
    a = answers(project)
    for env in a["environments"]:
        services = compose_config(project, env)["services"]
        members = {name: set(s.get("networks") or {}) for name, s in services.items()}
        for first in members:
            for second in members:
                if first < second and role(first) != role(second) and members[first] & members[second]:
                    pair = frozenset((role(first), role(second)))
                    assert pair in MAY_SHARE, f"{env}: {first} and {second} share {members[first] & members[second]}"
        if "grafana" in members:
            assert ("grafana-web" in members["proxy"]) == bool(a.get("grafana_public")), env
        # The app and the proxy never reach Alertmanager, Loki or Grafana's API; the proxy never the data.
        for name in [n for n in members if role(n) in {"app", "proxy", "migrate"}]:
            for other in ("alertmanager", "loki", "alloy", "node-exporter", "cadvisor"):
                assert not members[name] & members.get(other, set()), f"{env}: {name} reaches {other}"
        for other in ("db", "cache"):
            assert not members["proxy"] & members.get(other, set()), f"{env}: the proxy reaches {other}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_compliance_doc_and_audit_data_agree(render, variant):
    """docs/compliance.md and scripts/lib/compliance.sh render from the same data: the same
    controls in the same order, the same exemptions, the same published ports."""
    project = render(variant)
    lib = (project / "scripts/lib/compliance.sh").read_text()
    doc = (project / "docs/compliance.md").read_text()
    controls = re.search(r"^CONTROLS=\((.*)\)$", lib, re.MULTILINE).group(1).split()
    assert len(controls) == 15 and re.findall(r"^\| `([a-z-]+)`: ", doc, re.MULTILINE) == controls
    exempt = set(re.findall(r"^\t\[([a-z-]+/[a-z-]+)\]=", lib.split("declare -A EXEMPT=(")[1].split(")\n")[0], re.MULTILINE))
    documented = {f"{service}/{control}" for service, control in
                  re.findall(r"^\| ([a-z-]+)(?: \(profile, opt-in\))? \| `([a-z-]+)` \|", doc, re.MULTILINE)}
    assert exempt == documented
    published = set(re.findall(r"^\t\[([a-z]+/[a-z-]+)\]=\"", lib, re.MULTILINE))
    assert published == {f"{env}/{service}" for env, service in re.findall(r"^\| ([a-z]+) \| ([a-z-]+) \| [0-9]", doc, re.MULTILINE)}
    assert published and all(f"{env}/proxy" in published for env in answers(project)["environments"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_catalogue_names_every_config_file_a_swarm_stack_mounts(render, variant):
    """A Swarm config per file (catalogue PROXIES "files", DATABASES "config_files"): the lists are
    exactly the files config/<proxy>/<env>/ and config/db/ hold, so no file is left out of a stack."""
    from extensions.catalogue import DATABASES, PROXIES

    project = render(variant)
    given = answers(project)
    for env in given["environments"]:
        held = sorted(p.name for p in (project / "config" / given["proxy"] / env).iterdir())
        assert held == sorted(PROXIES[given["proxy"]]["files"]), env
    if given["database"] != "none":
        # ...and the archiver (PostgreSQL's archive_command, MariaDB's db-archive), which only Compose mounts.
        archive = [DATABASES[given["database"]]["archive"]["file"]]
        assert sorted(p.name for p in (project / "config" / "db").iterdir()) == sorted(DATABASES[given["database"]]["config_files"] + archive)
