"""Unit tests of the extension (extensions/): validators, the service model and per-environment
policy as plain Python, the context hook's cache, and that every branch of the model is reached."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import os
import socket
import subprocess
import sys
import tempfile
import time
import types

import coverage
import pytest

from conftest import ROOT, require_tool
from e2e_support import free_port, wait_until
from extensions import answers as a
from extensions import compile_cache, deployment, model
from extensions.catalogue import IMAGES
from extensions.environments import PROFILES
from extensions.services import to_yaml

BASE = dict(
    runtime="python", python_installer="pip", database="postgres", cache="redis", monitoring="prometheus",
    proxy="nginx", tls="files", environments=["production", "dev"], project_slug="shop", app_port=8000,
    health_path="/healthz", start_command="gunicorn app.main:app", migrate_command="python -m app.migrate",
    app_cpus="1.0", app_memory="512M", app_replicas=3, domain_production="shop.example.com", image_name="shop",
    deploy_strategy="rolling", alert_receiver="none",
)

# Answer sets that together take every choice of every question the model reads.
ANSWER_SETS = [
    BASE,
    dict(BASE, runtime="node", database="mariadb", cache="none", proxy="caddy", tls="acme", acme_email="a@b.example",
         monitoring="prometheus-loki", alert_receiver="webhook", environments=["staging"], deploy_strategy="blue-green"),
    dict(BASE, runtime="go", database="none", monitoring="none", proxy="traefik", tls="none", environments=["dev"]),
    dict(BASE, proxy="traefik", tls="acme", acme_email="a@b.example", alert_receiver="email", alert_smtp_username="am",
         environments=["dev", "staging", "production"], domain_staging="s.example.com", grafana_public=True),
    dict(BASE, proxy="caddy", tls="files", alert_receiver="email", alert_smtp_username="", migrate_command=""),
    dict(BASE, python_installer="uv", database="mariadb", cache="redis", monitoring="prometheus"),
    dict(BASE, database="none", tls="none", monitoring="prometheus"),
    dict(BASE, metrics_path=""),
    dict(BASE, metrics_path="", proxy="traefik", tls="none"),
    dict(BASE, orchestrators=["swarm"], environments=["dev", "staging", "production"], domain_staging="s.example.com"),
    dict(BASE, orchestrators=["swarm"], runtime="node", database="mariadb", cache="none", proxy="caddy", tls="acme",
         acme_email="a@b.example", monitoring="none", migrate_command="",
         project_slug="a-rather-long-project-slug-for-billing"),
    dict(BASE, orchestrators=["swarm"], database="none", cache="none", proxy="caddy", tls="none"),
    dict(BASE, orchestrators=["kubernetes"], environments=["dev", "staging", "production"], domain_staging="s.example.com",
         app_max_replicas=6),
    dict(BASE, orchestrators=["kubernetes", "swarm"], runtime="node", database="mariadb", cache="none", proxy="caddy", tls="acme",
         acme_email="a@b.example", monitoring="none", migrate_command="", kubernetes_cluster_issuer="le"),
    dict(BASE, orchestrators=["kubernetes"], database="none", cache="none", tls="none", metrics_path=""),
    dict(BASE, orchestrators=["kubernetes"], environments=["dev", "staging", "production"], domain_staging="s.example.com",
         kubernetes_postgres="cloudnative-pg", kubernetes_backup_endpoint="https://minio.example.org:9000", backup_keep_days=0),
    dict(BASE, orchestrators=["kubernetes"], kubernetes_postgres="cloudnative-pg", kubernetes_backup_destination="gs://shop-backups"),
]


def derive(**changes):
    return model.derive(dict(BASE, **changes))


def names(derived: dict) -> list[str]:
    return [s.name for s in derived["services"]]


@pytest.mark.parametrize("name, slug", [("Billing API", "billing-api"), ("  My__Service!! ", "my-service"), ("3D Printer", "svc-3d-printer")])
def test_slugify_gives_a_valid_slug(name, slug):
    assert a.slugify(name) == slug
    assert a.slug_error(slug) == ""


@pytest.mark.parametrize("command, expected", [
    ("gunicorn --config app/gunicorn_conf.py app.main:app", '["gunicorn", "--config", "app/gunicorn_conf.py", "app.main:app"]'),
    ("node 'my server.js'", '["node", "my server.js"]'),
])
def test_exec_form(command, expected):
    assert a.exec_form(command) == expected


@pytest.mark.parametrize("value, ok", [("64M", True), ("1G", True), ("63M", False), ("1.5G", False), ("512", False)])
def test_memory_validation(value, ok):
    assert (a.memory_error(value) == "") is ok


def test_environments_keep_a_fixed_order_whatever_the_answer_order():
    assert derive()["environments"] == ["dev", "production"]


def test_per_environment_policy_comes_from_the_profiles():
    derived = derive(environments=["dev", "staging", "production"], domain_staging="s.example.com")
    envs, app = derived["envs"], derived["service"]["app-blue"]
    assert [envs[e]["replicas"] for e in ("dev", "staging", "production")] == [1, 2, 3]
    assert [envs[e]["restart"] for e in ("dev", "staging", "production")] == ["no", "unless-stopped", "always"]
    assert app.limits["production"] == {"cpus": "1", "memory": "512M"} and app.limits["dev"] == {"cpus": "0.5", "memory": "256M"}
    assert app.pids == 256 and app.compose()["deploy"] == {"resources": {"limits": {"pids": 256}}}
    # dev: a block of host ports of the project's own (from its slug), the container's port inside.
    block = envs["dev"]["http_port"]
    assert 10000 <= block < 30000 and block % 100 == 0 and envs["production"]["http_port"] == 80
    assert envs["dev"]["published"]["db"]["mapping"] == f"127.0.0.1:${{DB_PORT:-{block + 2}}}:5432"
    assert derive(project_slug="other")["envs"]["dev"]["http_port"] != block, "another project, another block"
    # Outside dev only Grafana's loopback port (for an SSH tunnel), unless it is public.
    assert list(envs["production"]["published"]) == ["grafana"] == list(envs["staging"]["published"])
    assert envs["production"]["published"]["grafana"]["mapping"] == "127.0.0.1:${GRAFANA_PORT:-3000}:3000"
    assert derive(grafana_public=True)["envs"]["production"]["published"] == {}
    assert envs["production"]["tls"] and envs["staging"]["tls"] and not envs["dev"]["tls"]
    assert envs["production"]["secrets"][-2:] == ["tls_cert", "tls_key"] and "tls_cert" not in envs["dev"]["secrets"]
    assert derived["backup_environments"] == ["staging", "production"]
    assert [envs[e]["confirm_data_changes"] for e in ("dev", "staging", "production")] == [False, False, True]
    assert derive(environments=["staging"], app_replicas=1)["envs"]["staging"]["replicas"] == 1


def test_services_follow_the_answers():
    assert names(derive()) == [
        "app-blue", "app-green", "migrate", "proxy", "db", "db-roles", "cache", "prometheus", "alertmanager", "grafana",
        "node-exporter", "cadvisor", "db-exporter", "cache-exporter", "proxy-exporter", "blackbox-exporter",
    ]
    minimal = derive(database="none", cache="none", monitoring="none", proxy="caddy")
    assert names(minimal) == ["app-blue", "app-green", "proxy"]
    assert minimal["networks"] == ["edge"] and minimal["volumes"] == [] and minimal["secrets"] == {}
    assert "migrate" not in names(derive(migrate_command=""))


def test_blackbox_exporter_runs_only_where_tls_ends_here():
    blackbox = derive()["service"]["blackbox-exporter"]
    assert blackbox.only_in == ["production"] and not blackbox.runs_in("dev")
    assert "blackbox-exporter" not in names(derive(tls="none"))


def test_each_service_mounts_only_the_secrets_it_reads():
    derived = derive(database="mariadb", alert_receiver="webhook")
    readers = derived["secrets"]
    assert readers["db_root_password"] == ["db", "db-roles"]
    for service in derived["services"]:
        for secret in service.secrets:
            assert service.role in readers[secret], (service.name, secret)
    app = derived["service"]["app-blue"]
    assert app.secrets == ["db_app_password", "redis_password"] and derived["service"]["proxy"].secrets == []
    assert derived["service"]["alertmanager"].secrets == ["alertmanager_web_config", "alert_webhook_url"]


def test_database_shares_networks_with_the_app_and_its_exporter_only():
    service = derive()["service"]
    assert service["db"].networks == ["backend", "scrape-db"] and service["proxy"].networks == ["edge", "scrape-proxy"]
    assert derive(monitoring="none")["service"]["db"].networks == ["backend"]


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_point_in_time_recovery_archives_on_the_compose_target_only(database):
    """PostgreSQL's server archives its own WAL; MariaDB's binary log is streamed by db-archive, alone
    with the db on the `archive` network, with its own secret. Swarm and Kubernetes get neither."""
    derived = derive(database=database, orchestrators=["swarm", "kubernetes"])
    service, volume = derived["service"], derived["db"]["archive"]["volume"]
    assert derived["pitr"] and volume in derived["volumes"]
    assert ("db-archive" in service) == (database == "mariadb")
    if database == "mariadb":
        archiver = service["db-archive"]
        assert archiver.networks == ["archive"] and "archive" in service["db"].networks
        assert [name for name, s in service.items() if "archive" in s.networks] == ["db", "db-archive"]
        assert archiver.secrets == ["db_archive_password"] and derived["secrets"]["db_archive_password"] == ["db-archive", "db-roles"]
        assert archiver.user == service["db"].user and archiver.healthcheck["test"][0] == "CMD-SHELL"
        assert "--log-bin=binlog" in service["db"].compose_only["command"]
    else:
        assert "archive_mode=on" in service["db"].compose_only["command"]
    stack = derived["swarm"]["stacks"]["production"]
    assert "db-archive" not in stack["services"] and volume not in json.dumps(stack)
    assert "command" not in stack["services"]["db"] and "db-archive" not in json.dumps(derived["kubernetes"]["base"])


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_mariadb_dumps_in_a_client_of_its_own_on_the_compose_target(database):
    """MariaDB's dump runs in db-backup: a one-off of the db image that `up` never starts (a profile),
    alone with the db on the `dump` network, reading only the backup password, logging nothing (its
    output is the dump). PostgreSQL's dump stays in the db container; Swarm and Kubernetes get none."""
    derived = derive(database=database, orchestrators=["swarm", "kubernetes"])
    service = derived["service"]
    assert ("db-backup" in service) == (database == "mariadb")
    if database == "postgres":
        return
    client = service["db-backup"]
    assert client.profiles == ["backup"] and client.one_off and client.unlogged and client.image == service["db"].image
    assert [name for name, s in service.items() if "dump" in s.networks] == ["db", "db-backup"]
    assert client.secrets == ["db_backup_password"] and derived["secrets"]["db_backup_password"] == ["db", "db-backup", "db-roles"]
    assert client.compose_env("production", PROFILES["production"])["logging"] == {"driver": "none"}
    assert service["db"].compose_env("production", PROFILES["production"])["logging"] != {"driver": "none"}
    assert "db-backup" not in json.dumps(derived["swarm"]["stacks"]["production"])
    assert "db-backup" not in json.dumps(derived["kubernetes"]["base"])


def test_grafana_is_public_only_when_answered():
    private, public = derive(), derive(grafana_public=True)
    assert "grafana-web" not in private["service"]["proxy"].networks and "grafana-web" in public["service"]["proxy"].networks
    assert private["service"]["grafana"].environment["GF_SECURITY_ADMIN_USER"] == "shop-admin"
    assert "GF_SECURITY_COOKIE_SECURE" not in str(private["service"]["grafana"].env_environment)
    assert public["service"]["grafana"].env_environment["production"]["GF_SECURITY_COOKIE_SECURE"] == "true"
    assert "production" not in public["service"]["grafana"].ports  # dev publishes its internals on loopback


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_the_verify_throwaway_is_the_db_service_hardened_and_offline(database):
    derived = derive(database=database)
    db, args = derived["service"]["db"], derived["db"]["throwaway"]
    assert f"--user={db.user}" in args and "--network=none" in args and "--read-only" in args
    assert {"--cap-drop=ALL", "--security-opt=no-new-privileges:true"} <= set(args)
    assert any(arg.startswith("--pids-limit=") for arg in args) and any(arg.startswith("--memory=") for arg in args)
    envs = [arg.removeprefix("--env=") for arg in args if arg.startswith("--env=")]
    assert envs == [f"{key}={value}" for key, value in db.environment.items()]
    # Passwords only as files (mounted by the script), never a value in its settings.
    assert all("PASSWORD=" not in env for env in envs) and any("PASSWORD_FILE=/run/secrets/" in env for env in envs)


def test_hsts_only_where_tls_ends_here_with_subdomains_as_answered():
    plain, with_subdomains = derive()["envs"], derive(hsts_include_subdomains=True)["envs"]
    assert "Strict-Transport-Security" not in plain["dev"]["response_headers"]
    assert plain["production"]["response_headers"]["Strict-Transport-Security"] == "max-age=63072000"
    assert with_subdomains["production"]["response_headers"]["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    assert plain["dev"]["response_headers"]["X-Content-Type-Options"] == "nosniff"


def test_app_healthcheck_needs_no_curl_and_is_escaped_for_compose():
    for runtime in ("python", "node"):  # the runtime itself asks the app
        check = derive(runtime=runtime)["app_healthcheck"]
        assert check[0] == "CMD" and "curl" not in json.dumps(check) and "wget" not in json.dumps(check)
    # Go runs from scratch: the static busybox copied in by the Dockerfile asks (sh and wget).
    go = derive(runtime="go")["app_healthcheck"]
    assert go[:3] == ["CMD", "sh", "-c"] and "wget" in go[-1]
    dollar = derive(health_path="/health$probe")
    raw, composed = dollar["app_healthcheck"][-1], dollar["service"]["app-blue"].healthcheck["test"][-1]
    assert raw.count("$probe") >= 1
    assert composed == raw.replace("$", "$$"), "Compose would interpolate a lone $"


def test_images_are_overridable_and_listed_only_when_used():
    derived = derive(database="mariadb", cache="none", monitoring="none", proxy="traefik")
    assert derived["service"]["db"].image == "${MARIADB_IMAGE:-${IMAGE_MIRROR:-docker.io}/library/" + IMAGES["mariadb"] + "}"
    exporter = derive(database="postgres")["service"]["db-exporter"].image
    assert exporter.startswith("${POSTGRES_EXPORTER_IMAGE:-${IMAGE_MIRROR:-quay.io}/prometheuscommunity/postgres-exporter:")
    assert derived["image_keys"] == ["python", "traefik", "mariadb"]


def test_backup_schedule_follows_the_answer():
    assert derive(backup_time="23:05")["backup_cron"] == "5 23 * * *"
    assert derive()["backup_environments"] == ["production"]
    assert derive(database="none")["backup_environments"] == []


def test_rendered_service_yaml_reads_back_as_the_model():
    import yaml

    anchors = "a: &hardening {}\nb: &app {}\nc: &logging {}\ns:\n"
    for derived in (model.derive(answers) for answers in ANSWER_SETS):
        for service in derived["services"]:
            specs = [service.compose()] + [service.compose_env(env, derived["envs"][env])
                                           for env in derived["environments"] if service.runs_in(env)]
            for spec in specs:
                loaded = yaml.safe_load(anchors + to_yaml(spec, 2, service.notes) + "\n")["s"]
                plain = {k: v for k, v in spec.items() if k not in ("<<", "logging")}
                assert {k: v for k, v in loaded.items() if k not in ("<<", "logging")} == json.loads(json.dumps(plain)), service.name


def test_context_hook_caches_on_the_whole_answer_set():
    context = {name: BASE.get(name) for name in deployment.QUESTIONS}
    context.update(project_name="Shop", example_app=True, install_dir="/srv/shop", process_manager="systemd",
                   backup_time="03:00", backup_keep_last=7, backup_keep_days=14)
    deployment._derive_cached.cache_clear()
    hook = deployment.DeploymentContext.__new__(deployment.DeploymentContext)
    hook.hook(context)
    first = context["dp"]
    hook.hook(dict(context))
    assert deployment._derive_cached.cache_info().hits == 1
    # Any answer is part of the key, including ones derive() does not read today.
    hook.hook(dict(context, backup_keep_last=8))
    assert deployment._derive_cached.cache_info().misses == 2
    assert first is not None
    # Before every always-asked question is answered, there is no `dp` (and nothing is asked).
    partial = {"project_name": "Shop"}
    hook.hook(partial)
    assert "dp" not in partial


def test_the_model_reaches_every_branch_of_the_extension(tmp_path):
    """ANSWER_SETS reach every branch of the model's modules: a choice no set takes is untested."""
    modules = ["model", "services", "environments", "catalogue", "swarm", "kubernetes"]
    cov = coverage.Coverage(branch=True, data_file=str(tmp_path / ".coverage"),
                            include=[str(ROOT / "extensions" / f"{m}.py") for m in modules])
    cov.start()
    try:
        name = "_coverage_extensions"
        spec = importlib.util.spec_from_file_location(name, ROOT / "extensions" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "extensions")])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
        fresh = importlib.import_module(f"{name}.model")
        render = importlib.import_module(f"{name}.services").to_yaml
        manifests = importlib.import_module(f"{name}.services").to_manifests
        for answers in ANSWER_SETS:
            derived = fresh.derive(answers)
            if derived["kubernetes"]:
                for documents in derived["kubernetes"]["base"].values():
                    manifests(documents)
            for service in derived["services"]:
                render(service.compose(), 4, service.notes)
                for env in derived["environments"]:
                    if service.only_in and service.runs_in(env):
                        render(service.compose_whole(env, derived["envs"][env]), 4, service.notes)
                    elif service.runs_in(env):
                        render(service.compose_env(env, derived["envs"][env]), 4, service.env_notes)
    finally:
        cov.stop()
        for key in [k for k in sys.modules if k.startswith("_coverage_extensions")]:
            del sys.modules[key]
    missing = {}
    for module in modules:
        path = str(ROOT / "extensions" / f"{module}.py")
        analysis = cov._analyze(path)
        if analysis.missing or analysis.missing_branch_arcs():
            missing[module] = {"lines": sorted(analysis.missing), "branches": analysis.missing_branch_arcs()}
    assert not missing, missing


LITERAL_ENVIRONMENT = re.compile(r"""(==|!=)\s*["']?(dev|staging|production)\b|\b(dev|staging|production)["']?\s*(==|!=)""")


def test_no_literal_environment_comparisons_outside_the_profiles():
    """Per-environment policy lives in extensions/environments.py; nothing else compares names."""
    found = []
    for path in sorted((ROOT / "template").rglob("*")) + sorted((ROOT / "extensions").glob("*.py")):
        if path.is_file() and path.name != "environments.py":
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if LITERAL_ENVIRONMENT.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# --- compliance: the controls scripts/audit.sh checks and their exemptions -----------------------

def test_only_documented_services_are_exempt_from_a_control():
    from extensions.compliance import CONTROL_IDS
    default = model.derive(BASE)["compliance"]
    assert default["exemptions"] == {
        "proxy-exporter": {"health-check": default["exemptions"]["proxy-exporter"]["health-check"]},
        "cadvisor": default["exemptions"]["cadvisor"],
    }
    assert set(default["exemptions"]["cadvisor"]) == {"non-root", "not-privileged", "capabilities-dropped", "no-sensitive-host-paths"}
    assert default["optional"] == ["cadvisor"]
    assert [c["id"] for c in default["controls"]] == list(CONTROL_IDS) and len(set(CONTROL_IDS)) == 15
    acme_logs = model.derive(ANSWER_SETS[1])["compliance"]["exemptions"]
    assert set(acme_logs) == {"alloy", "cadvisor", "proxy"}  # caddy (no proxy exporter) with acme: UID 0
    assert set(acme_logs["alloy"]) == {"non-root", "no-runtime-socket"}
    traefik_acme = model.derive(ANSWER_SETS[3])["compliance"]["exemptions"]
    assert set(traefik_acme["proxy"]) == {"non-root"}
    assert model.derive(ANSWER_SETS[2])["compliance"]["exemptions"] == {}  # unmonitored, no exemption at all


def test_published_ports_per_environment_follow_the_profiles():
    plan = model.derive(ANSWER_SETS[3])["compliance"]
    assert plan["published"]["production"] == {"proxy": {"ports": [8080, 8443], "any_address": True}}  # grafana public
    assert plan["published"]["dev"]["db"] == {"ports": [5432], "any_address": False}
    assert model.derive(BASE)["compliance"]["published"]["production"]["grafana"] == {"ports": [3000], "any_address": False}
    assert plan["restart"] == {"dev": "no", "staging": "unless-stopped", "production": "always"}


@pytest.mark.parametrize("change, control", [
    (dict(user="0:0"), "non-root"),
    (dict(user="root"), "non-root"),
    (dict(base=None, hardening={"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}), "read-only-rootfs"),
    (dict(base=None, hardening={"read_only": True, "security_opt": ["no-new-privileges:true"]}), "capabilities-dropped"),
    (dict(base=None, hardening={"read_only": True, "cap_drop": ["ALL"]}), "no-new-privileges"),
    (dict(hardening={"privileged": True}), "not-privileged"),
    (dict(healthcheck=None), "health-check"),
    (dict(pid="host"), "host-namespaces"),
    (dict(volumes=["/run/containerd/containerd.sock:/c.sock"]), "no-runtime-socket"),
    (dict(volumes=["/etc/ssl:/certs:ro"]), "no-sensitive-host-paths"),
    (dict(devices=["/dev/fuse"]), "no-sensitive-host-paths"),
])
def test_a_service_that_breaks_a_control_without_a_reason_does_not_render(change, control):
    from extensions.compliance import UnexplainedDeviation, deviations, exemptions
    services = model.build_services(model.Facts(BASE))
    cache = next(s for s in services if s.name == "cache")
    assert deviations(cache, "10001:10001") == []
    for key, value in change.items():
        setattr(cache, key, value)
    assert deviations(cache, "10001:10001") == [control]
    with pytest.raises(UnexplainedDeviation, match=f"service cache breaks the control {control}: give the reason"):
        exemptions(services, "10001:10001")


def test_the_app_runs_as_the_app_user_and_one_offs_are_not_audited():
    from extensions.compliance import deviations, exemptions
    services = model.build_services(model.Facts(BASE))
    app = next(s for s in services if s.name == "app-blue")
    assert deviations(app, "10001:10001") == [] and deviations(app, "0:0") == ["non-root"]
    migrate = next(s for s in services if s.name == "migrate")
    assert deviations(migrate, "10001:10001") == ["health-check"]
    assert "migrate" not in exemptions(services, "10001:10001")


def test_the_template_repositorys_renovate_config_finds_every_pin():
    """renovate.json (this repository's) validates and its regexes (run with Python's re) find every
    image, action, CI tool and build tool the catalogue pins."""
    from conftest import check_jsonschema
    from extensions import catalogue

    check_jsonschema("--builtin-schema", "vendor.renovate", ROOT / "renovate.json")
    config = json.loads((ROOT / "renovate.json").read_text())
    text = (ROOT / "extensions" / "catalogue.py").read_text()
    found = set()
    for manager in config["customManagers"]:
        for pattern in manager["matchStrings"]:
            for match in re.finditer(pattern.replace("(?<", "(?P<"), text):
                groups = match.groupdict()
                found.add(f'{groups.get("depName") or groups.get("name")}:{groups["currentValue"]}')
    expected = {image.rsplit(":", 1)[0] + ":" + image.rsplit(":", 1)[1] for image in catalogue.IMAGES.values()}
    expected |= set(catalogue.GITLAB_DOCKER.values())
    expected |= {f"{name}:{release}" for name, (_, release) in catalogue.GITHUB_ACTIONS.items()}
    expected |= {f"{name}:{version}" for pins in (catalogue.CI_LINTERS, catalogue.CI_COPIER, catalogue.CI_SCANNER, catalogue.TOOLS)
                 for name, version in pins.items()}
    assert expected <= found, sorted(expected - found)


def test_swarm_stack_follows_the_service_model():
    """The Swarm target renders from the same services: the app once (no colours), the one-offs as
    jobs, the database and proxy placed by label; nothing when the answer leaves swarm out."""
    assert derive()["swarm"] is None
    swarm = derive(orchestrators=["swarm"], project_slug="a-rather-long-project-slug-for-billing")["swarm"]
    stack = swarm["stacks"]["production"]
    assert list(stack["services"]) == ["app", "migrate", "db", "db-roles", "cache", "proxy"]
    assert swarm["jobs"] == ["db-roles", "migrate"]
    assert {stack["services"][job]["deploy"]["mode"] for job in swarm["jobs"]} == {"replicated-job"}
    app = stack["services"]["app"]
    assert app["deploy"]["update_config"]["order"] == "start-first" and app["deploy"]["update_config"]["failure_action"] == "rollback"
    assert app["deploy"]["endpoint_mode"] == "dnsrr" and app["deploy"]["replicas"] == "${APP_REPLICAS:-3}"
    assert stack["services"]["db"]["deploy"]["placement"]["constraints"] == [
        "node.labels.a-rather-long-project-slug-for-billing.db == true"]
    assert stack["services"]["proxy"]["deploy"]["mode"] == "global"
    assert stack["networks"]["backend"]["driver_opts"] == {"encrypted": "true"} and stack["networks"]["backend"]["internal"]
    # Secrets and configs: versioned names that fit Swarm's 64 characters, each given to its reader only.
    names = [spec["name"].split("-${")[0] for kind in ("secrets", "configs") for spec in stack[kind].values()]
    assert len(set(names)) == len(names) and all(len(name) + 13 <= 64 for name in names), names
    assert {s["uid"] for s in stack["services"]["db"]["secrets"]} == {"999"}
    assert all(s["mode"] == 0o400 for spec in stack["services"].values() for s in spec.get("secrets", []))
    # The variable of every object is one the script sets from its file.
    assert {var for var, _ in swarm["objects"]["production"]} == {
        spec["name"].split("${")[1].split(":")[0] for kind in ("secrets", "configs") for spec in stack[kind].values()}


def test_kubernetes_target_follows_the_service_model():
    """The Kubernetes target: nothing unless asked; per environment a namespace, the autoscaling
    range from the replicas answers and the profile's cap; the jobs in order; each workload reads
    the secrets its Compose service reads."""
    assert derive()["kubernetes"] is None
    derived = derive(orchestrators=["kubernetes"], environments=["dev", "staging", "production"],
                     domain_staging="s.example.com", app_replicas=3, app_max_replicas=7)
    k8s = derived["kubernetes"]
    assert k8s["namespaces"] == {"dev": "shop-dev", "staging": "shop-staging", "production": "shop-production"}
    assert k8s["jobs"] == ["db-roles", "migrate"]
    hpa = {env: next(p["spec"] for p in o["resources"] if p["kind"] == "HorizontalPodAutoscaler")
           for env, o in k8s["overlays"].items()}
    assert hpa == {"dev": {"minReplicas": 1, "maxReplicas": 1}, "staging": {"minReplicas": 2, "maxReplicas": 2},
                   "production": {"minReplicas": 3, "maxReplicas": 7}}
    app = next(d for d in k8s["base"]["app.yaml"] if d["kind"] == "Deployment")
    mounted = {i["key"] for v in app["spec"]["template"]["spec"]["volumes"] if "secret" in v for i in v["secret"]["items"]}
    assert mounted == set(derived["service"]["app-blue"].secrets)
    assert "cert-manager.io/cluster-issuer" not in json.dumps(k8s["overlays"]["production"]["ingress"])
    acme = derive(orchestrators=["kubernetes"], tls="acme", acme_email="a@b.example", kubernetes_cluster_issuer="le")
    ops = acme["kubernetes"]["overlays"]["production"]["ingress"]
    assert {"op": "add", "path": "/metadata/annotations", "value": {"cert-manager.io/cluster-issuer": "le"}} in ops
    assert "tls" not in {g["name"] for g in acme["kubernetes"]["overlays"]["production"]["kustomization"]["secretGenerator"]}


def test_every_secret_has_a_rotation_plan_and_the_refused_ones_say_why():
    """scripts/rotate-secret.sh gets, per secret: who checks it first (a database role through
    db-roles, the cache), whether the app reads it, the services recreated after it, or why it is
    not rotated; derived from who reads each secret."""
    for answers in ANSWER_SETS:
        derived = model.derive(answers)
        plan, services = derived["rotation"], {s.name: s for s in derived["services"]}
        assert {name for env in derived["environments"] for name in derived["envs"][env]["secrets"]} == set(plan)
        assert derived["rotatable"] == any(not p["refused"] for p in plan.values())
        roles = {name: role for role, name in (derived["db"] or {}).get("passwords", {}).items()}
        for name, p in plan.items():
            readers = derived["secrets"].get(name, [])
            assert p["app"] == ("app" in readers), name
            if p["refused"]:
                assert len(p["refused"]) > 30 and not p["server"], name
                continue
            assert p["server"] == ("db-roles" if name in roles else "cache" if name == "redis_password" else ""), name
            for service in p["restart"]:
                # Recreated: a long-running service; never the app (it switches colours) or the database.
                assert service in services and not services[service].one_off and service not in ("db", "app"), (name, service)
        for name, role in roles.items():
            assert bool(plan[name]["refused"]) == (role == "admin"), name
            assert plan[name]["swarm_db"] == ("db" in derived["secrets"][name]), name
        if "redis_password" in plan:
            assert plan["redis_password"]["server"] == "cache" and plan["redis_password"]["app"]
        for user in ("prometheus", "alertmanager"):
            if f"{user}_password" in plan:
                assert plan[f"{user}_password"]["remake"] == f"{user}_web_config"
                assert plan[f"{user}_password"]["restart"][0] == user
                assert "rotate that one" in plan[f"{user}_web_config"]["refused"]
        for name in ("tls_cert", "tls_key", "grafana_admin_password"):
            assert name not in plan or plan[name]["refused"], name
        for name in ("alert_webhook_url", "alert_smtp_password"):
            assert name not in plan or plan[name]["value"] == "operator", name
    assert not model.derive(dict(BASE, database="none", cache="none", monitoring="none", tls="none"))["rotatable"]


def _counting_environment(**options):
    """A Jinja environment with the compile cache, and the list of sources it really compiled."""
    from jinja2 import Environment
    from jinja2.ext import Extension

    class Counting(Extension):
        calls = 0

        def preprocess(self, source, name, filename=None):
            Counting.calls += 1
            return source

    env = Environment(extensions=[Counting], **options)
    compiled = []
    real = env.compile
    env.compile = lambda *args, **kwargs: compiled.append(args[0]) or real(*args, **kwargs)
    env.compile = compile_cache.compiled_once(env)
    return env, compiled, Counting


@pytest.fixture
def own_temp_dir(tmp_path, monkeypatch):
    """Jinja's bytecode cache lives in the temporary directory: this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(compile_cache.SWITCH, raising=False)
    return tmp_path


def test_each_source_is_compiled_once_and_each_template_renders_on_its_own(own_temp_dir):
    """The compile cache (compile_cache.compiled_once): the same source compiles once; the
    templates made from it keep their own globals; another source compiles anew; preprocess hooks
    still run."""
    env, compiled, counting = _counting_environment()
    first = env.from_string("{{ who }} at {{ where }}", globals={"where": "home"})
    second = env.from_string("{{ who }} at {{ where }}", globals={"where": "work"})
    assert (first.render(who="a"), second.render(who="b")) == ("a at home", "b at work")
    env.from_string("{{ who }}!")
    assert compiled == ["{{ who }} at {{ where }}", "{{ who }}!"]
    assert counting.calls >= 3


def test_a_later_run_reads_the_compiled_code_from_the_disk_cache(own_temp_dir):
    """A new environment (another render, another process) compiles nothing it compiled before, and
    the code it reads names its own file (each render clones the template to a new directory)."""
    source = "{% macro greet(who) %}hi {{ who }}{% endmacro %}{{ greet(name) }}"
    env, compiled, _ = _counting_environment()
    env.compile(source, "a.txt.jinja", "/clone-1/a.txt.jinja")
    assert compiled == [source]
    assert list((own_temp_dir / f"_jinja2-cache-{os.getuid()}").glob("deployment-patterns-*.cache"))

    later, compiled_later, counting = _counting_environment()
    code = later.compile(source, "a.txt.jinja", "/clone-2/a.txt.jinja")
    assert compiled_later == [] and counting.calls == 1
    nested = [const for const in code.co_consts if isinstance(const, types.CodeType)]
    assert nested and {c.co_filename for c in [code, *nested]} == {"/clone-2/a.txt.jinja"}
    assert later.from_string(source).render(name="x") == "hi x"


def test_the_disk_cache_is_not_shared_by_environments_that_compile_differently(own_temp_dir):
    """Other delimiters (Copier's `_envops`) compile the same source to other code: never read
    from an entry another environment wrote."""
    source = "[[ a ]]{{ a }}"
    plain, _, _ = _counting_environment()
    assert plain.from_string(source).render(a=1) == "[[ a ]]1"
    square, compiled, _ = _counting_environment(variable_start_string="[[", variable_end_string="]]")
    assert square.from_string(source).render(a=1) == "1{{ a }}"
    assert compiled == [source]


def test_without_the_disk_cache_each_run_compiles_afresh(own_temp_dir, monkeypatch):
    """DEPLOYMENT_PATTERNS_COMPILE_CACHE=off, or no safe temporary directory (Jinja refuses one it
    does not own with mode 0700): nothing is written, every run compiles, renders still work."""
    monkeypatch.setenv(compile_cache.SWITCH, "off")
    for _ in range(2):
        env, compiled, _ = _counting_environment()
        assert env.from_string("{{ 1 + 1 }}").render() == "2" and compiled == ["{{ 1 + 1 }}"]
    assert not any(own_temp_dir.iterdir())

    monkeypatch.delenv(compile_cache.SWITCH)
    (own_temp_dir / f"_jinja2-cache-{os.getuid()}").write_text("not a directory")
    for _ in range(2):
        env, compiled, _ = _counting_environment()
        assert env.from_string("{{ 2 + 2 }}").render() == "4" and compiled == ["{{ 2 + 2 }}"]


@pytest.mark.parametrize("runtime", ["python", "node", "go"])
def test_app_healthcheck_is_a_valid_program_of_its_interpreter(runtime, tmp_path):
    """Each check parses (Python compiles, node --check, sh -n); what they conclude from each answer,
    at the container's own address and on localhost only: tests/test_e2e_shapes.py."""
    check = model.app_healthcheck(runtime, 8080, "/healthz")
    program = tmp_path / "check"
    program.write_text(check[-1])
    interpreter = {"python": ["python3", "-c", "import sys; compile(open(sys.argv[1]).read(), 'check', 'exec')"],
                   "node": [require_tool("node"), "--check"], "go": ["sh", "-n"]}[runtime]
    proc = subprocess.run([*interpreter, program], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def status_server():
    """tests/status_server.py on all of this host's addresses (the check asks the hostname's)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, ROOT / "tests" / "status_server.py", "0.0.0.0", str(port)])
    try:
        wait_until(lambda: listening(port), 10, f"the status server on port {port}", interval=0.05)
        yield port
    finally:
        server.kill()
        server.wait()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def check_on_this_host(runtime: str, port: int, path: str, *options: str) -> list[str]:
    """The app's health check run by this host's interpreter, OPTIONS before the check's own."""
    interpreter = sys.executable if runtime == "python" else require_tool("node")
    return [interpreter, *options, *model.app_healthcheck(runtime, port, path)[2:]]


# Each runtime's check with a witness of its full path: the modules Python imports (-X importtime),
# Node's fetch (wrapped by a preloaded module).
FETCH_WITNESS = "const f=globalThis.fetch;globalThis.fetch=(...a)=>{process.stderr.write('full check\\n');return f(...a)};"


@pytest.mark.parametrize("runtime", ["python", "node"])
def test_app_healthcheck_judges_a_status_by_its_cheap_path_and_a_redirect_in_full(runtime, status_server, tmp_path):
    """It runs every few seconds in every replica (every 250 ms in a starting one, failing or not):
    a 2xx passes and a 4xx or 5xx fails without urllib (Python) or fetch (Node), named as the full
    check names it; a redirect is followed by the full check."""
    witness = tmp_path / "witness.js"
    witness.write_text(FETCH_WITNESS)
    options = ["-X", "importtime"] if runtime == "python" else ["--require", str(witness)]

    def check(path: str) -> tuple[bool, bool, str]:
        proc = subprocess.run(check_on_this_host(runtime, status_server, path, *options), capture_output=True,
                              text=True, timeout=20)
        full = "urllib.request" in proc.stderr if runtime == "python" else "full check" in proc.stderr
        return proc.returncode == 0, full, proc.stderr

    assert check("/s/200")[:2] == (True, False)
    assert check("/s/204")[:2] == (True, False)
    assert check("/moved")[:2] == (True, True), "a redirect is followed"
    for status in ("503", "404"):
        passed, full, said = check(f"/s/{status}")
        assert (passed, full) == (False, False) and said.strip().splitlines()[-1] == f"/s/{status} answered {status}", said


@pytest.mark.parametrize("runtime", ["python", "node"])
def test_app_healthcheck_fails_at_once_on_an_app_that_does_not_answer(runtime):
    """Connected, no answer: the check says so itself, before Docker's 5 s timeout stops it."""
    with socket.create_server(("0.0.0.0", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run(check_on_this_host(runtime, port, "/healthz"), capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0 and re.fullmatch(rf"no answer at [0-9.]+:{port}: timed out", proc.stderr.strip()), proc.stderr
    assert time.monotonic() - started < 4.5

