"""Environments: every per-environment policy, as data. Templates and scripts read these values
(through the model) instead of comparing environment names."""

from __future__ import annotations

import zlib
from typing import Any

ENVIRONMENTS = ("dev", "staging", "production")

PROFILES: dict[str, dict[str, Any]] = {
    "dev": {
        "app_env": "development",
        "log_level": "debug",
        "restart": "no",
        # Limits: this share of production's.
        "scale": 0.5,
        # App replicas: at most this many (None: the app_replicas answer).
        "max_replicas": 1,
        "log_max_size": "10m",
        "log_max_file": 2,
        # Where the proxy listens on the host, and its default ports there (None: a block of host
        # ports of the project's own, host_ports(), so that dev stacks of several projects coexist).
        "bind_address": "127.0.0.1",
        "http_port": None,
        "https_port": None,
        # Databases and monitoring UIs published on 127.0.0.1 (for a developer's tools).
        "publish_internals": True,
        # Networks other than the edge have no route out.
        "internal_networks": False,
        # TLS ends at the proxy (when the tls answer asks for it): plain HTTP on localhost in dev.
        "tls": False,
        "domain_question": None,
        # Scheduled backups and their verification (dev data is disposable).
        "scheduled_backups": False,
        # The daily compliance audit of the running stack (scripts/audit.sh), at the backup time.
        "scheduled_audit": False,
        # How the rendered pipeline deploys here: never, on every push to main, or on approval of
        # the digest that the previous environment runs.
        "pipeline_deploy": None,
        # Restores (and the rollbacks that restore) need --confirm-<env>.
        "confirm_data_changes": False,
        # A secret file that cannot get the secrets group falls back to 0644 (a developer's machine).
        "secrets_fallback_world_readable": True,
        # Host process manager starts the stack at boot.
        "autostart": False,
        "prometheus_retention": "7d",
    },
    "staging": {
        "app_env": "staging",
        "log_level": "info",
        "restart": "unless-stopped",
        "scale": 0.5,
        "max_replicas": 2,
        "log_max_size": "20m",
        "log_max_file": 3,
        "bind_address": "0.0.0.0",
        "http_port": 80,
        "https_port": 443,
        "publish_internals": False,
        "internal_networks": True,
        "tls": True,
        "domain_question": "domain_staging",
        "scheduled_backups": True,
        "scheduled_audit": True,
        # How the rendered pipeline deploys here: never, on every push to main, or on approval of
        # the digest that the previous environment runs.
        "pipeline_deploy": "automatic",
        "confirm_data_changes": False,
        "secrets_fallback_world_readable": False,
        "autostart": True,
        "prometheus_retention": "7d",
    },
    "production": {
        "app_env": "production",
        "log_level": "info",
        "restart": "always",
        "scale": 1.0,
        "max_replicas": None,
        "log_max_size": "50m",
        "log_max_file": 5,
        "bind_address": "0.0.0.0",
        "http_port": 80,
        "https_port": 443,
        "publish_internals": False,
        "internal_networks": True,
        "tls": True,
        "domain_question": "domain_production",
        "scheduled_backups": True,
        "scheduled_audit": True,
        # How the rendered pipeline deploys here: never, on every push to main, or on approval of
        # the digest that the previous environment runs.
        "pipeline_deploy": "approval",
        "confirm_data_changes": True,
        "secrets_fallback_world_readable": False,
        "autostart": True,
        "prometheus_retention": "15d",
    },
}

# Services whose internal port dev publishes on 127.0.0.1: (env file key, port in the container).
PUBLISHED_INTERNALS = {
    "prometheus": ("PROMETHEUS_PORT", 9090),
    "alertmanager": ("ALERTMANAGER_PORT", 9093),
    "grafana": ("GRAFANA_PORT", 3000),
}

# A project's own block of host ports (environments without fixed ports): picked from its slug
# among 200 blocks of 100 between 10000 and 30000 (below Linux's ephemeral ports), the same at
# every render and update. Two projects share a block with a chance of 1 in 200: the ports are
# settings in env/<env>.env, and `scripts/compose.sh` names the one that is taken.
PORT_BLOCK_START, PORT_BLOCK_SIZE, PORT_BLOCKS = 10000, 100, 200
HOST_PORT_OFFSETS = {"http": 0, "https": 1, "db": 2, "prometheus": 3, "alertmanager": 4, "grafana": 5}


def host_ports(profile: dict[str, Any], slug: str) -> dict[str, int]:
    """Default host port per published service ("http", "https", "db", "prometheus", ...)."""
    if profile["http_port"] is not None:
        # Grafana's loopback port for an SSH tunnel (when it is not public): Grafana's own default.
        return {"http": profile["http_port"], "https": profile["https_port"], "grafana": 3000}
    base = PORT_BLOCK_START + zlib.crc32(slug.encode()) % PORT_BLOCKS * PORT_BLOCK_SIZE
    return {name: base + offset for name, offset in HOST_PORT_OFFSETS.items()}


def limits(cpus: float, memory_mib: int, scale: float) -> dict[str, str]:
    """A production size scaled for an environment, never below 0.1 CPU and 64 MiB."""
    scaled_cpus = max(round(cpus * scale, 2), 0.1)
    scaled_memory = max(int(memory_mib * scale), 64)
    return {"cpus": f"{scaled_cpus:g}", "memory": f"{scaled_memory}M"}


def replicas(profile: dict[str, Any], app_replicas: int) -> int:
    cap = profile["max_replicas"]
    return app_replicas if cap is None else min(cap, app_replicas)
