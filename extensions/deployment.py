"""Derived settings of the deployment template.

This is the one place where values are computed from the answers: images, per-environment
profiles (sizes, ports, restart and log policies), the services in the stack, their secrets
and health checks. Templates only read the `dp` object built here, and copier.yml validators
call the `*_error` filters, which return an empty string or a message that names the fix.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from typing import Any

from copier_template_extensions import ContextHook
from jinja2.ext import Extension

ENVIRONMENTS = ("dev", "staging", "production")

# Every container that reads a secret runs with this group; secret files are 0640 root:SECRETS_GID
# because Compose bind-mounts secret files with their host permissions (docker/compose#9648).
APP_UID = 10001
SECRETS_GID = 10001

# Official images, pinned. Each can be overridden per environment by the env file key shown in
# `image_vars` (e.g. POSTGRES_IMAGE=postgres:17.2-bookworm).
IMAGES = {
    "python": "python:3.12-slim-bookworm",
    "node": "node:22-bookworm-slim",
    "go": "golang:1.23-bookworm",
    "debian": "debian:bookworm-slim",
    "postgres": "postgres:17-bookworm",
    "mariadb": "mariadb:11.4",
    "redis": "redis:7.4-bookworm",
    "nginx": "nginx:1.27-bookworm",
    "caddy": "caddy:2.8",
    "traefik": "traefik:v3.1",
    "prometheus": "prom/prometheus:v2.54.1",
    "alertmanager": "prom/alertmanager:v0.27.0",
    "grafana": "grafana/grafana:11.2.0",
    "node-exporter": "prom/node-exporter:v1.8.2",
    "cadvisor": "gcr.io/cadvisor/cadvisor:v0.49.1",
    "postgres-exporter": "quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
    "mysqld-exporter": "prom/mysqld-exporter:v0.15.1",
    "redis-exporter": "oliver006/redis_exporter:v1.62.0-alpine",
    "nginx-exporter": "nginx/nginx-prometheus-exporter:1.3.0",
    "loki": "grafana/loki:3.1.1",
    "alloy": "grafana/alloy:v1.3.1",
    "blackbox-exporter": "prom/blackbox-exporter:v0.25.0",
}

# Build tools installed in the build stage only (pinned; override with --build-arg).
TOOLS = {"uv": "0.13.9", "poetry": "2.5.1", "poetry-plugin-export": "1.10.1"}

RUNTIME_DEFAULTS = {
    "python": {
        "app_port": 8000,
        "start_command": "gunicorn --config app/gunicorn_conf.py app.main:app",
        "migrate_command": "python -m app.migrate",
    },
    "node": {"app_port": 3000, "start_command": "node server.js", "migrate_command": "node migrate.js"},
    "go": {"app_port": 8080, "start_command": "/app/server", "migrate_command": "/app/server migrate"},
}

DATABASES = {
    "postgres": {
        "image": "postgres",
        "port": 5432,
        "scheme": "postgresql",
        "uid": 999,
        "data_dir": "/var/lib/postgresql/data",
        "run_dir": "/var/run/postgresql",
        "exporter": "postgres-exporter",
        "exporter_port": 9187,
    },
    "mariadb": {
        "image": "mariadb",
        "port": 3306,
        "scheme": "mysql",
        "uid": 999,
        "data_dir": "/var/lib/mysql",
        "run_dir": "/run/mysqld",
        "exporter": "mysqld-exporter",
        "exporter_port": 9104,
    },
}

# Per-environment profiles. Sizes scale the production limits below.
PROFILES = {
    "dev": {
        "app_env": "development",
        "log_level": "debug",
        "restart": "no",
        "scale": 0.5,
        "log_max_size": "10m",
        "log_max_file": 2,
        "bind_address": "127.0.0.1",
        "http_port": 8080,
        "https_port": 8443,
        "publish_internals": True,
        "internal_networks": False,
    },
    "staging": {
        "app_env": "staging",
        "log_level": "info",
        "restart": "unless-stopped",
        "scale": 0.5,
        "log_max_size": "20m",
        "log_max_file": 3,
        "bind_address": "0.0.0.0",
        "http_port": 80,
        "https_port": 443,
        "publish_internals": False,
        "internal_networks": True,
    },
    "production": {
        "app_env": "production",
        "log_level": "info",
        "restart": "always",
        "scale": 1.0,
        "log_max_size": "50m",
        "log_max_file": 5,
        "bind_address": "0.0.0.0",
        "http_port": 80,
        "https_port": 443,
        "publish_internals": False,
        "internal_networks": True,
    },
}

# Production limits per service: (cpus, memory in MiB). The app's come from the answers.
SIZES = {
    "proxy": (0.5, 128),
    "db": (1.0, 1024),
    "cache": (0.5, 256),
    "prometheus": (1.0, 1024),
    "alertmanager": (0.25, 128),
    "grafana": (0.5, 256),
    "node-exporter": (0.25, 64),
    "cadvisor": (0.5, 256),
    "db-exporter": (0.25, 64),
    "cache-exporter": (0.25, 64),
    "proxy-exporter": (0.25, 64),
    "loki": (1.0, 512),
    "alloy": (0.5, 256),
    "blackbox-exporter": (0.25, 64),
}

# Host ports that dev publishes on 127.0.0.1 for a service's internal port (env file key, port).
DEV_PORTS = {
    "prometheus": ("PROMETHEUS_PORT", 9090),
    "alertmanager": ("ALERTMANAGER_PORT", 9093),
    "grafana": ("GRAFANA_PORT", 3000),
}

# Where each proxy's per-environment configuration lives (config/<proxy>/<env>/) and is mounted;
# where .deploy/<env>/proxy/ is mounted and the file in it that names the active colour.
PROXY_CONFIG = {
    "nginx": {"config_dir": "config/nginx", "mount": "/etc/nginx/deploy", "active": "/etc/nginx/active",
              "upstream_file": "upstream.conf"},
    "caddy": {"config_dir": "config/caddy", "mount": "/etc/caddy/deploy", "active": "/etc/caddy/active",
              "upstream_file": "upstream-name"},
    "traefik": {"config_dir": "config/traefik", "mount": "/etc/traefik/deploy", "active": "/etc/traefik/active",
                "upstream_file": "upstream.yml"},
}

MONITORING_SERVICES = (
    "prometheus", "alertmanager", "grafana", "node-exporter", "cadvisor",
    "db-exporter", "cache-exporter", "proxy-exporter", "loki", "alloy", "blackbox-exporter",
)

# Secret files the operator fills in (a placeholder is made on first use), not random values.
OPERATOR_SECRETS = ("alert_webhook_url", "alert_smtp_password")

# Internal port on every proxy for its health check and metrics; never published.
PROXY_OPS_PORT = 8081
PROXY_HTTP_PORT = 8080
PROXY_HTTPS_PORT = 8443

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
IMAGE_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
MEMORY_RE = re.compile(r"^([1-9][0-9]*)([MG])$")


# --- validators: return "" when the value is fine, else a message that names the fix -------------


def slugify(value: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"svc-{slug}"
    return slug[:40].rstrip("-")


def slug_error(value: str) -> str:
    if not SLUG_RE.match(value or "") or len(value) > 40:
        return (
            f"project_slug {value!r} is not usable as a compose project and image name: use 1-40 "
            "lowercase letters, digits and single dashes, starting with a letter, e.g. billing-api"
        )
    return ""


def port_error(value: Any) -> str:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return f"app_port {value!r} is not a number: use a port between 1024 and 65535, e.g. 8000"
    if not 1024 <= port <= 65535:
        return (
            f"app_port {port} is out of range: the app runs as a non-root user, so use a port "
            "between 1024 and 65535, e.g. 8000"
        )
    return ""


def command_error(value: str, name: str, optional: bool = False) -> str:
    if not (value or "").strip():
        return "" if optional else f"{name} is empty: give the command that starts the app, e.g. node server.js"
    try:
        shlex.split(value)
    except ValueError as error:
        return f"{name} cannot be split into arguments ({error}): check its quotes"
    if any(ch in value for ch in "|&;<>`$"):
        return (
            f"{name} uses shell syntax, but it runs in exec form without a shell: "
            "give a plain command, or put the shell logic in a script and name that script"
        )
    return ""


def image_error(value: str) -> str:
    if not IMAGE_RE.match(value or ""):
        return (
            f"image_name {value!r} is not an image repository: use lowercase letters, digits, "
            "'.', '_', '-' and '/', without a tag, e.g. ghcr.io/acme/billing-api"
        )
    return ""


def domain_error(value: str, name: str) -> str:
    if not DOMAIN_RE.match(value or ""):
        return f"{name} {value!r} is not a host name: use lowercase DNS labels, e.g. api.example.com"
    return ""


EMAIL_RE = re.compile(r"^[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
SMARTHOST_RE = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


def email_error(value: str, name: str) -> str:
    if not EMAIL_RE.match(value or ""):
        return f"{name} {value!r} is not an e-mail address: use one like ops@example.com"
    return ""


def smarthost_error(value: str) -> str:
    if not SMARTHOST_RE.match(value or "") or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        return f"alert_smtp_smarthost {value!r} is not host:port: use e.g. smtp.example.com:587"
    return ""


def cpus_error(value: str) -> str:
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        cpus = -1.0
    if not 0.05 <= cpus <= 64:
        return f"app_cpus {value!r} is not a CPU count: use a number of cores between 0.05 and 64, e.g. 1.0"
    return ""


def memory_error(value: str) -> str:
    match = MEMORY_RE.match(value or "")
    if not match or memory_mib(value) < 64:
        return f"app_memory {value!r} is not a memory size: use a whole number with M or G, at least 64M, e.g. 512M"
    return ""


def memory_mib(value: str) -> int:
    match = MEMORY_RE.match(value)
    if not match:
        raise ValueError(value)
    number, unit = int(match.group(1)), match.group(2)
    return number * 1024 if unit == "G" else number


def exec_form(command: str) -> str:
    """A command line as the JSON array Dockerfile CMD and Compose `command:` take."""
    return json.dumps(shlex.split(command))


# --- derived settings -----------------------------------------------------------------------------


def _limits(cpus: float, memory: int, scale: float) -> dict[str, str]:
    scaled_cpus = max(round(cpus * scale, 2), 0.1)
    scaled_memory = max(int(memory * scale), 64)
    return {"cpus": f"{scaled_cpus:g}", "memory": f"{scaled_memory}M"}


def _app_healthcheck(runtime: str, port: int, path: str) -> list[str]:
    """A health check that needs no curl: the runtime itself asks the app."""
    url = f"http://127.0.0.1:{port}{path}"
    if runtime == "python":
        code = f"import sys,urllib.request;sys.exit(urllib.request.urlopen('{url}',timeout=4).status!=200)"
        return ["CMD", "python", "-c", code]
    if runtime == "node":
        code = f"fetch('{url}').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
        return ["CMD", "node", "-e", code]
    # Go images run on debian-slim: bash's /dev/tcp speaks enough HTTP/1.0 for a status line.
    script = (
        f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf "GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n" >&3 '
        '&& read -r _ status _ <&3 && [ "$status" = 200 ]'
    )
    return ["CMD", "bash", "-c", script]


def _cron_daily(hh_mm: str) -> str:
    hour, minute = hh_mm.split(":")
    return f"{int(minute)} {int(hour)} * * *"


def _image_keys(runtime: str, proxy: str, database: str, services: list[str]) -> list[str]:
    """The images this stack uses, in the order the env file lists them."""
    keys = {"python": ["python"], "node": ["node"], "go": ["go", "debian"]}[runtime] + [proxy]
    by_service = {
        "db": database,
        "cache": "redis",
        "db-exporter": DATABASES.get(database, {}).get("exporter"),
        "cache-exporter": "redis-exporter",
        "proxy-exporter": "nginx-exporter",
    }
    for service in services:
        key = by_service.get(service, service)
        if key in IMAGES and key not in keys:
            keys.append(key)
    return keys


def derive(answers: dict[str, Any]) -> dict[str, Any]:
    """Everything the templates need beyond the raw answers."""
    runtime = answers["runtime"]
    database = answers["database"]
    cache = answers["cache"]
    monitoring = answers["monitoring"]
    proxy = answers["proxy"]
    environments = [env for env in ENVIRONMENTS if env in answers["environments"]]
    slug = answers["project_slug"]
    app_port = int(answers["app_port"])
    db = dict(DATABASES[database], name=database) if database != "none" else None
    monitored = monitoring != "none"
    with_logs = monitoring == "prometheus-loki"
    migrate = bool(db and (answers.get("migrate_command") or "").strip())

    services = ["app", "proxy"]
    if migrate:
        services.append("migrate")
    if db:
        services.append("db")
    if cache == "redis":
        services.append("cache")
    if monitored:
        services += ["prometheus", "alertmanager", "grafana", "node-exporter", "cadvisor"]
        if db:
            services.append("db-exporter")
        if cache == "redis":
            services.append("cache-exporter")
        if proxy == "nginx":
            services.append("proxy-exporter")
    if with_logs:
        services += ["loki", "alloy"]

    # Secrets: name -> services that read it. Files live in secrets/<env>/<name>.
    secrets: dict[str, list[str]] = {}
    if db:
        secrets["db_password"] = ["app", "db"] + (["migrate"] if migrate else []) + (["db-exporter"] if monitored else [])
        if database == "mariadb":
            secrets["db_root_password"] = ["db"]
    if cache == "redis":
        secrets["redis_password"] = ["app", "cache"] + (["cache-exporter"] if monitored else [])
    if monitored:
        secrets["grafana_admin_password"] = ["grafana"]
    alert_receiver = (answers.get("alert_receiver") or "none") if monitored else "none"
    if alert_receiver == "webhook":
        secrets["alert_webhook_url"] = ["alertmanager"]
    if alert_receiver == "email" and (answers.get("alert_smtp_username") or "").strip():
        secrets["alert_smtp_password"] = ["alertmanager"]
    # The app's contract in variables; *_PASSWORD_FILE names a secret the entrypoint turns into a URL.
    database_env = {
        "DATABASE_SCHEME": db["scheme"], "DATABASE_HOST": "db", "DATABASE_PORT": str(db["port"]),
        "DATABASE_NAME": "app", "DATABASE_USER": "app", "DATABASE_PASSWORD_FILE": "/run/secrets/db_password",
    } if db else {}
    cache_env = {
        "REDIS_HOST": "cache", "REDIS_PORT": "6379", "REDIS_PASSWORD_FILE": "/run/secrets/redis_password",
    } if cache == "redis" else {}
    # APP_VERSION from the same interpolation as the image tag: the env file's copy must not win.
    version_env = {"APP_VERSION": "${APP_VERSION:-dev}"}
    service_environment = {
        "app": {"PORT": str(app_port), **version_env, **database_env, **cache_env},
        "migrate": {"PORT": str(app_port), **version_env, **database_env},
    }

    # The app runs as two Compose services, its colours: the proxy routes to one of them
    # (.deploy/<env>/active-colour). A deploy starts the new version in the other colour and points
    # the proxy at it once healthy, so that a replica leaves the proxy's rotation before it is told
    # to stop. Rolling then stops the old colour; blue-green keeps it running for a fast rollback.
    blue_green = answers.get("deploy_strategy") == "blue-green"
    apps = {}
    for colour in ("blue", "green"):
        prefix = f"APP_{colour.upper()}"
        apps[f"app-{colour}"] = {
            "colour": colour,
            "version": "${%s_VERSION:-dev}" % prefix,
            "version_var": f"{prefix}_VERSION",
            "replicas_var": f"{prefix}_REPLICAS",
            # Only one service builds the image (both colours share its name).
            "builds": colour == "blue",
        }
    for name, app in apps.items():
        service_environment[name] = dict(service_environment["app"], APP_VERSION=app["version"])

    # The Compose services, with the app's expanded to its colours.
    compose_services = [n for s in services for n in (list(apps) if s == "app" else [s])]

    service_secrets: dict[str, list[str]] = {}
    for secret, readers in secrets.items():
        for service in readers:
            service_secrets.setdefault(service, []).append(secret)

    # Networks: edge (proxy and app), backend (database, cache), monitoring (scrapes).
    backend = bool(db) or cache == "redis"
    service_networks = {name: ["monitoring"] for name in services if name in MONITORING_SERVICES}
    service_networks.update(
        app=["edge"] + (["backend"] if backend else []) + (["monitoring"] if monitored else []),
        proxy=["edge"] + (["monitoring"] if monitored else []),
        migrate=["backend"],
        db=["backend"],
        cache=["backend"],
    )
    for name in ("db-exporter", "cache-exporter"):
        service_networks[name] = ["backend", "monitoring"]
    for name in ("alertmanager", "grafana"):  # alertmanager sends out; grafana is proxied
        service_networks[name] = ["monitoring", "edge"]
    service_networks["blackbox-exporter"] = ["monitoring"]
    probed = monitored and answers.get("tls", "none") != "none"
    service_networks = {name: nets for name, nets in service_networks.items()
                        if name in services or (name == "blackbox-exporter" and probed)}
    for name in apps:
        # Colours are "app" to Prometheus (the monitoring network), never to the proxy.
        service_networks[name] = {net: {"aliases": ["app"]} if net == "monitoring" else {} for net in service_networks["app"]}
    networks = [net for net in ("edge", "backend", "monitoring") if any(net in n for n in service_networks.values())]
    volumes = [
        volume
        for volume, wanted in (
            ("proxy-data", answers.get("tls") == "acme"),
            ("db-data", bool(db)),
            ("cache-data", cache == "redis"),
            ("prometheus-data", monitored),
            ("alertmanager-data", monitored),
            ("grafana-data", monitored),
            ("loki-data", with_logs),
        )
        if wanted
    ]

    tls_files = answers.get("tls") == "files"
    tls_secrets = ["tls_cert", "tls_key"] if tls_files else []

    app_cpus = float(answers["app_cpus"])
    app_memory = memory_mib(answers["app_memory"])
    domains = {
        "dev": "localhost",
        "staging": answers.get("domain_staging") or "localhost",
        "production": answers.get("domain_production") or "localhost",
    }

    envs = {}
    for env in environments:
        profile = PROFILES[env]
        tls_on = env != "dev" and answers.get("tls", "none") != "none"
        replicas = 1 if env == "dev" else (min(2, int(answers["app_replicas"])) if env == "staging" else int(answers["app_replicas"]))
        limits = {name: _limits(*SIZES[name], profile["scale"]) for name in SIZES}
        limits["app"] = _limits(app_cpus, app_memory, profile["scale"])
        limits["migrate"] = limits["app"]
        env_secrets = list(secrets) + (tls_secrets if tls_on else [])
        # Replicas per colour: its own count once deployed, else APP_REPLICAS for blue and none for
        # green (it has none until the second deploy).
        shared = "${APP_REPLICAS:-%d}" % replicas
        app_replicas = {
            name: "${%s:-%s}" % (app["replicas_var"], "0" if app["colour"] == "green" else shared)
            for name, app in apps.items()
        }
        # Dev publishes internals on 127.0.0.1 only; other environments publish the proxy alone.
        published = {}
        if profile["publish_internals"]:
            internal_ports = dict(DEV_PORTS, db=("DB_PORT", db["port"]) if db else None)
            for name, (key, port) in ((n, p) for n, p in internal_ports.items() if p and n in services):
                published[name] = {"key": key, "port": port, "mapping": f"127.0.0.1:${{{key}:-{port}}}:{port}"}
        envs[env] = dict(
            profile,
            # Certificate expiry is probed where TLS ends here (blackbox exporter, this environment only).
            services=compose_services + (["blackbox-exporter"] if monitored and tls_on else []),
            name=env,
            project=f"{slug}-{env}",
            domain=domains[env],
            tls=tls_on,
            replicas=replicas,
            app_replicas=app_replicas,
            limits=limits,
            secrets=env_secrets,
            published=published,
        )

    healthcheck = _app_healthcheck(runtime, app_port, answers["health_path"])
    image_vars = {key: key.upper().replace("-", "_") + "_IMAGE" for key in IMAGES}
    # What compose files write for an image: the pinned default, overridable from the env file.
    image_ref = {key: "${%s:-%s}" % (image_vars[key], IMAGES[key]) for key in IMAGES}
    if db:
        db["exporter_ref"] = image_ref[db["exporter"]]
    acme = answers.get("tls") == "acme"
    return {
        "app_uid": APP_UID,
        "secrets_gid": SECRETS_GID,
        "environments": environments,
        # Environments with scheduled backups: dev data is disposable.
        "backup_environments": [env for env in environments if env != "dev"] if db else [],
        "envs": envs,
        "services": services,
        # What each Compose service is: a colour's role is "app".
        "role": {**{s: s for s in services}, **{name: "app" for name in apps}},
        "apps": apps,
        "blue_green": blue_green,
        "secrets": secrets,
        "service_secrets": service_secrets,
        "service_environment": service_environment,
        "service_networks": service_networks,
        "networks": networks,
        "volumes": volumes,
        "tls_secrets": tls_secrets,
        "images": dict(IMAGES),
        "image_keys": _image_keys(runtime, proxy, database, services + (["blackbox-exporter"] if probed else [])),
        "image_vars": image_vars,
        "image_ref": image_ref,
        # Non-root proxy unless ACME state must go to a root-owned volume (then UID 0, no caps).
        "proxy": {"acme": acme, "uid": 65534, **PROXY_CONFIG[proxy]},
        "db": db,
        "migrate": migrate,
        "monitored": monitored,
        "with_logs": with_logs,
        "alert_receiver": alert_receiver,
        "operator_secrets": [name for name in OPERATOR_SECRETS if name in secrets],
        # Environments whose TLS certificate Prometheus watches.
        "probe_environments": [env for env in environments if "blackbox-exporter" in envs[env]["services"]],
        # Node exporter reads the backup scripts' metrics (metrics/ENV/*.prom).
        "backup_metrics": bool(db) and monitored,
        "app_port": app_port,
        "proxy_ports": {"http": PROXY_HTTP_PORT, "https": PROXY_HTTPS_PORT, "ops": PROXY_OPS_PORT},
        "app_healthcheck": healthcheck,
        # Compose interpolates "$": the same check, escaped for a compose file.
        "app_healthcheck_compose": [arg.replace("$", "$$") for arg in healthcheck],
        "start_exec": exec_form(answers["start_command"]),
        "migrate_exec": exec_form(answers["migrate_command"]) if migrate else "[]",
        "tools": TOOLS,
        # cron's "minute hour" fields of the daily backup time (HH:MM).
        "backup_cron": _cron_daily(answers.get("backup_time") or "03:00"),
        "python_installer": answers.get("python_installer") if runtime == "python" else None,
    }


class DeploymentExtension(Extension):
    """Filters for validators and templates, and the per-runtime defaults copier.yml reads."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.filters.update(
            slugify=slugify,
            slug_error=slug_error,
            port_error=port_error,
            command_error=command_error,
            image_error=image_error,
            domain_error=domain_error,
            email_error=email_error,
            smarthost_error=smarthost_error,
            cpus_error=cpus_error,
            memory_error=memory_error,
            exec_form=exec_form,
            json=json.dumps,
        )
        environment.globals.update(runtime_defaults=RUNTIME_DEFAULTS)


# The answers derive() reads; the hook runs for every file and path, so results are cached on them.
DERIVED_FROM = (
    "runtime", "python_installer", "database", "cache", "monitoring", "proxy", "tls", "environments",
    "project_slug", "app_port", "health_path", "start_command", "migrate_command", "app_cpus",
    "app_memory", "app_replicas", "domain_staging", "domain_production", "backup_time", "deploy_strategy",
    "alert_receiver", "alert_smtp_username",
)
REQUIRED = ("runtime", "database", "cache", "monitoring", "proxy", "environments", "project_slug",
            "app_port", "health_path", "start_command", "app_cpus", "app_memory", "app_replicas")


@functools.lru_cache(maxsize=32)
def _derive_cached(key: str) -> dict[str, Any]:
    return derive(json.loads(key))


class DeploymentContext(ContextHook):
    """Adds `dp` (derived settings) to the context of every rendered file."""

    def hook(self, context: dict[str, Any]) -> None:
        # Questions are rendered before every answer exists: derive only once they all do.
        if all(key in context for key in REQUIRED):
            key = json.dumps({k: context.get(k) for k in DERIVED_FROM}, sort_keys=True, default=list)
            try:
                context["dp"] = _derive_cached(key)
            except (ValueError, TypeError, KeyError):
                # An answer still being validated: its validator reports it, files are not rendered.
                pass
