"""The Swarm target (answer `orchestrators`: swarm): one stack file per environment, swarm/ENV.yaml,
rendered from the same Service objects as the Compose files (services.py). Swarm decides here what
Compose leaves to scripts: the app is one service that Swarm updates start-first and rolls back by
itself when a new task fails its health check; migrations and role setup are jobs; the database
and cache live on the node labelled for them, the proxy on the edge nodes.

What differs from Compose, and why:
- Discovery by DNS round robin (endpoint_mode dnsrr): Swarm's virtual IPs need IPVS, which many
  kernels lack; the proxies already re-resolve the app's name every few seconds.
- Ports published in host mode on the edge nodes (the routing mesh needs IPVS too).
- Secrets and configs are immutable in Swarm: each has a versioned name (a hash of its content,
  computed by scripts/lib/swarm.sh), so that a changed file is a new object and the services that
  read it are updated, one task at a time.
- A stack file interpolates variables but has no nested defaults: images are `${X_IMAGE}`, which
  scripts/lib/swarm.sh sets from the pin and IMAGE_MIRROR as Compose would.
- Swarm cannot set no-new-privileges per service (the daemon's `no-new-privileges` option does it
  for every container of a node: docs/swarm.md) nor group_add: each secret is given to its reader's
  user instead, readable by that user only.
Monitoring (Prometheus, exporters, Grafana, Loki) is not part of the Swarm stack yet."""

from __future__ import annotations

import hashlib
from typing import Any

from .catalogue import APP_UID, IMAGES, PROXIES, SIZES, image_location, image_var
from .environments import limits
from .services import Service

APP_USER = f"{APP_UID}:{APP_UID}"  # the app's image user (the x-app anchor of compose.yaml)
# Roles that run on a Swarm, in the stack's order.
SWARM_ROLES = ("app", "migrate", "db", "db-roles", "cache", "proxy")
SWARM_NETWORKS = ("edge", "backend")
# Secret and config names: at most 64 characters, the last 13 "-" and a 12-digit content hash.
OBJECT_NAME_MAX = 64 - 13
# How long a job (migrations, roles) retries while what it needs starts (the database).
JOB_RESTART = {"condition": "on-failure", "delay": "5s", "max_attempts": 24}


def node_labels(slug: str) -> dict[str, str]:
    """The node labels that place the stateful services and the proxy (docs/swarm.md)."""
    return {"db": f"{slug}.db", "edge": f"{slug}.edge"}


def object_var(kind: str, name: str) -> str:
    """The variable that holds a secret's or config's content hash, e.g. SWARM_SECRET_DB_PASSWORD."""
    return f"SWARM_{kind.upper()}_{name.upper().replace('-', '_').replace('.', '_')}"


def object_name(slug: str, env: str, name: str) -> str:
    """A secret's or config's name without its version: unique in the Swarm, and short enough for
    the hash after it (Swarm allows 64 characters)."""
    full = f"{slug}-{env}-{name}"
    if len(full) <= OBJECT_NAME_MAX:
        return full
    return f"{full[:OBJECT_NAME_MAX - 9]}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def image_default(key: str) -> str:
    """What scripts/lib/swarm.sh sets X_IMAGE to when env/ENV.env does not: the pin, through
    IMAGE_MIRROR when that is set (registry and path apart: the script joins them)."""
    return "/".join(image_location(key))


def image_key(image: str) -> str | None:
    """The catalogue key of a compose image reference ${X_IMAGE:-...}, or None (the app)."""
    for key in IMAGES:
        if image.startswith("${%s:-" % image_var(key)):
            return key
    return None


def _tmpfs(entry: str) -> dict[str, Any]:
    target, _, options = entry.partition(":")
    mount: dict[str, Any] = {"type": "tmpfs", "target": target}
    if "mode=0700" in options:  # Swarm cannot chown a tmpfs: a sticky, world-writable one instead
        mount["tmpfs"] = {"mode": 0o1777}
    return mount


class SwarmStack:
    """One environment's stack: services, networks, volumes, secrets and configs."""

    def __init__(self, slug: str, e: dict[str, Any], services: list[Service], proxy: str, db_config_files: list[str],
                 app_limits: tuple[float, int], tls_secrets: list[str]):
        """`e` is the environment as derive() describes it (envs[ENV]: its profile, replicas, tls, ports)."""
        self.slug, self.env, self.e, self.proxy = slug, e["name"], e, proxy
        self.services = [s for role in SWARM_ROLES for s in services if s.role == role and s.runs_in(self.env)
                         and (s.role != "app" or s.colour == "blue")]
        self.db_config_files, self.app_limits = db_config_files, app_limits
        self.tls_secrets = tls_secrets if e["tls"] else []
        self.secrets: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.labels = node_labels(slug)

    # --- objects: a name per content version ------------------------------------------------------
    def _object(self, kind: str, name: str, path: str) -> str:
        store = self.secrets if kind == "secret" else self.configs
        var = object_var(kind, name)
        store[name] = {"file": f"../{path}", "name": "%s-${%s:?run scripts/deploy.sh %s}" % (
            object_name(self.slug, self.env, name), var, self.env)}
        return name

    def objects(self) -> list[tuple[str, str]]:
        """(variable, file relative to the project) of every secret and config: scripts/lib/swarm.sh
        sets each variable to a hash of the file's content."""
        return [(object_var(kind, name), spec["file"].removeprefix("../"))
                for kind, store in (("secret", self.secrets), ("config", self.configs)) for name, spec in store.items()]

    # --- services ------------------------------------------------------------------------------------
    def image(self, s: Service) -> str:
        key = image_key(s.image)
        if key:
            return "${%s:?run scripts/deploy.sh %s}" % (image_var(key), self.env)
        # By digest, as pushed (scripts/swarm/deploy.sh): every node runs exactly the release.
        ref = "MIGRATE_IMAGE_REF" if s.role == "migrate" else "APP_IMAGE_REF"
        return "${%s:?run scripts/deploy.sh %s}" % (ref, self.env)

    def service(self, s: Service) -> dict[str, Any]:
        # Every service of the stack runs as a user of its own, read-only, without capabilities.
        user = s.user or APP_USER
        spec: dict[str, Any] = {"image": self.image(s), "user": user, "read_only": True, "cap_drop": ["ALL"]}
        if s.init or s.role in ("app", "migrate"):
            spec["init"] = True
        if s.stop_grace_period:
            spec["stop_grace_period"] = s.stop_grace_period
        elif s.role == "app":
            spec["stop_grace_period"] = "30s"  # requests in flight finish (the app drains on SIGTERM)
        if s.entrypoint:
            spec["entrypoint"] = s.entrypoint
        if s.command:
            spec["command"] = s.command
        if s.environment:
            spec["environment"] = {k: ("${%s:?run scripts/deploy.sh %s}" % ("MIGRATE_VERSION" if s.role == "migrate" else "APP_VERSION", self.env)
                                       if k == "APP_VERSION" else v) for k, v in s.environment.items()}
        if s.env_file:
            spec["env_file"] = [f"../env/{self.env}.app.env"]
        uid, _, gid = user.partition(":")
        secrets = list(s.secrets) + (self.tls_secrets if s.role == "proxy" else [])
        if secrets:
            spec["secrets"] = [{"source": self._object("secret", name, f"secrets/{self.env}/{name}"), "target": name,
                                "uid": uid, "gid": gid, "mode": 0o400} for name in secrets]
        configs = self.config_mounts(s)
        if configs:
            spec["configs"] = [{"source": self._object("config", name, path), "target": target, "mode": 0o444}
                               for name, path, target in configs]
        mounts = [_tmpfs(entry) for entry in s.tmpfs]
        if s.shm_size:
            mounts.append({"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 256 * 1024 * 1024}})
        volumes = [v for v in s.volumes if not v.startswith(".")]
        if volumes or mounts:
            spec["volumes"] = volumes + mounts
        spec["healthcheck"] = s.healthcheck
        spec["networks"] = [n for n in s.networks if n in SWARM_NETWORKS]
        if s.role == "proxy":
            spec["ports"] = [{"target": 8080, "published": "${HTTP_PORT:-%d}" % self.e["http_port"], "protocol": "tcp", "mode": "host"}]
            if self.e["tls"]:
                spec["ports"].append({"target": 8443, "published": "${HTTPS_PORT:-%d}" % self.e["https_port"],
                                      "protocol": "tcp", "mode": "host"})
        spec["deploy"] = self.deploy(s)
        return spec

    def config_mounts(self, s: Service) -> list[tuple[str, str, str]]:
        """(config name, file in the project, path in the container) for what Compose bind-mounts."""
        if s.role == "db-roles":
            return [(f"db-{name}", f"config/db/{name}", f"/etc/db-roles/{name}") for name in self.db_config_files]
        if s.role == "proxy":
            control = PROXIES[self.proxy]
            route = control["swarm_route"]
            files = [(f"proxy-{name}", f"{control['config_dir']}/{self.env}/{name}", f"{control['mount']}/{name}")
                     for name in control["files"] if f"{control['mount']}/{name}" != route]
            # The name the proxy resolves: the app service, fixed (no colours on a Swarm).
            files.append(("proxy-upstream", "swarm/proxy-upstream", route))
            return files
        return []

    def deploy(self, s: Service) -> dict[str, Any]:
        size = self.app_limits if s.role in ("app", "migrate") else SIZES[s.role]
        resources = {"limits": {**limits(*size, self.e["scale"]), "pids": s.pids}}
        if s.one_off:
            return {"mode": "replicated-job", "resources": resources, "restart_policy": JOB_RESTART}
        if s.role == "proxy":
            # One per edge node, its ports on that node: an update stops the old one first.
            return {"mode": "global", "resources": resources,
                    "placement": {"constraints": [f"node.labels.{self.labels['edge']} == true"]},
                    "update_config": {"parallelism": 1, "order": "stop-first", "failure_action": "rollback"},
                    "restart_policy": {"condition": "any", "delay": "2s"}}
        if s.role in ("db", "cache"):
            # Its volume is on one node: pinned there, and never two at once on the same data.
            return {"replicas": 1, "endpoint_mode": "dnsrr", "resources": resources,
                    "placement": {"constraints": [f"node.labels.{self.labels['db']} == true"]},
                    "update_config": {"order": "stop-first", "failure_action": "rollback"},
                    "restart_policy": {"condition": "any", "delay": "5s"}}
        # The app: spread over the nodes; a new task must be healthy before an old one stops, and
        # a version whose tasks fail their health check is rolled back by Swarm itself.
        return {"replicas": "${APP_REPLICAS:-%d}" % self.e["replicas"], "endpoint_mode": "dnsrr", "resources": resources,
                "placement": {"preferences": [{"spread": "node.id"}]},
                "update_config": {"parallelism": 1, "delay": "0s", "order": "start-first", "monitor": "10s",
                                  "failure_action": "rollback", "max_failure_ratio": 0},
                "rollback_config": {"parallelism": 1, "order": "start-first", "failure_action": "pause"},
                "restart_policy": {"condition": "any", "delay": "2s"}}

    def render(self) -> dict[str, Any]:
        services = {("app" if s.role == "app" else s.name): self.service(s) for s in self.services}
        used = {n for spec in services.values() for n in spec.get("networks", [])}
        networks: dict[str, Any] = {"edge": {"driver": "overlay"}}  # the proxy and the app
        if "backend" in used:
            # The app's data crosses nodes: encrypted (IPsec), and no route out.
            networks["backend"] = {"driver": "overlay", "internal": True, "driver_opts": {"encrypted": "true"}}
        volumes = sorted({v.split(":", 1)[0] for spec in services.values() for v in spec.get("volumes", [])
                          if isinstance(v, str)})
        return {"services": services, "networks": networks, "volumes": {v: {} for v in volumes},
                "secrets": self.secrets, "configs": self.configs}


def swarm_model(slug: str, envs: dict[str, dict[str, Any]], services: list[Service], proxy: str,
                db_config_files: list[str], app_limits: tuple[float, int], tls_secrets: list[str],
                image_keys: list[str], app_port: int) -> dict[str, Any]:
    """The Swarm target of derive(): a stack per environment (`envs`, as derive() describes them)."""
    stacks, objects = {}, {}
    for env, e in envs.items():
        stack = SwarmStack(slug, e, services, proxy, db_config_files, app_limits, tls_secrets)
        stacks[env] = stack.render()
        objects[env] = stack.objects()
    used = {image_key(s.image) for s in services if s.role in SWARM_ROLES} - {None}
    return {
        "stacks": stacks,
        # The jobs a deploy waits for, in order (roles before migrations).
        "jobs": [s.name for role in ("db-roles", "migrate") for s in services if s.role == role],
        "objects": objects,
        "labels": node_labels(slug),
        # X_IMAGE -> its default (registry/path), for the images the stack runs.
        "images": {image_var(key): image_default(key) for key in image_keys if key in used},
        "upstream": {"nginx": f"set $app_upstream http://app:{app_port};", "caddy": "app", "traefik": ""}[proxy],
    }
