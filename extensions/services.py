"""The service model: every service of the stack described once, as data (image, command, user,
health check, environment, secrets, networks, volumes, hardening, and per environment: replicas,
resources, ports, restart and log policy). The Compose files render from it (see compose() and
compose_env()); other targets render from the same objects without deciding anything again."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# The order of keys in a rendered service, whatever built it.
KEY_ORDER = (
    "<<", "image", "profiles", "pull_policy", "build", "user", "group_add", "privileged", "read_only", "cap_drop",
    "security_opt", "pid", "tmpfs", "shm_size", "stop_grace_period", "init", "entrypoint", "command", "expose",
    "environment", "secrets", "volumes", "devices", "healthcheck", "depends_on", "networks", "deploy",
)
ENV_KEY_ORDER = ("restart", "logging", "cgroup_parent", "env_file", "deploy", "ports", "volumes", "secrets", "environment", "networks")


class Alias(str):
    """A YAML alias (*name) where a value goes: the name of an anchor of the rendered file."""

    def __str__(self) -> str:
        return f"*{super().__str__()}"


HARDENING = Alias("hardening")  # read-only root filesystem, no capabilities, no new privileges
LOGGING = Alias("logging")  # the environment's log rotation


@dataclass
class Service:
    """One Compose service. `role` says what it is (a colour's role is "app"): sizes, secrets and
    policies key on it. Lists of strings are what Compose takes, e.g. volumes "src:dst:ro"."""

    name: str
    role: str
    image: str
    colour: str | None = None  # the app's colours (model.colour_names)
    comment: str = ""  # why it is there, or what is special about it (above the service)
    notes: dict[str, str] = field(default_factory=dict)  # key -> comment above that key
    # The anchor merged first: HARDENING, Alias("app") (the app's image, user and hardening: colours
    # and migrate) or None (then `hardening` spells out what it keeps).
    base: Alias | None = HARDENING
    hardening: dict[str, Any] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)  # started only with one of these Compose profiles
    build: dict[str, Any] | None = None
    pull_policy: str | None = None
    user: str | None = None
    group_add: list[str] = field(default_factory=list)
    pid: str | None = None
    # Most processes and threads (catalogue.PIDS): the same in every environment, so in compose.yaml
    # (deploy.resources.limits.pids; Compose merges it with each environment's cpus and memory).
    pids: int = 64
    tmpfs: list[str] = field(default_factory=list)
    shm_size: str | None = None
    stop_grace_period: str | None = None
    init: bool = False
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    expose: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # the secret files it reads, at /run/secrets/NAME
    volumes: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    healthcheck: dict[str, Any] | None = None  # None: the image's; {"disable": True} for a one-off
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    networks: list[str] | dict[str, dict] = field(default_factory=list)
    # Environments that run it (None: all); otherwise compose.<env>.yaml defines it whole.
    only_in: list[str] | None = None
    one_off: bool = False  # runs to completion (never restarted)
    # Its output is data, not log lines (the backup's dump): no logging driver keeps a copy.
    unlogged: bool = False
    # Per environment: replicas (None: one), limits, host ports, and what differs by environment.
    replicas: dict[str, str] = field(default_factory=dict)
    limits: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: dict[str, list[str]] = field(default_factory=dict)
    env_file: bool = False  # reads env/<env>.app.env (the app's settings, not Compose's)
    env_volumes: dict[str, list[str]] = field(default_factory=dict)
    env_secrets: dict[str, list[str]] = field(default_factory=dict)
    env_environment: dict[str, dict[str, str]] = field(default_factory=dict)
    env_networks: dict[str, dict[str, dict]] = field(default_factory=dict)  # e.g. an alias in one environment
    env_notes: dict[str, str] = field(default_factory=dict)
    # Per environment: the cgroup slice its containers run in (model.container_slice), whose counters
    # scripts/container-metrics.sh reads without the Docker socket.
    cgroup_parent: dict[str, str] = field(default_factory=dict)
    # What only the Compose target adds to `command` and `volumes` (PostgreSQL's WAL archive: Swarm and
    # Kubernetes render the service without it).
    compose_only: dict[str, list[str]] = field(default_factory=dict)

    def runs_in(self, env: str) -> bool:
        return self.only_in is None or env in self.only_in

    def compose(self) -> dict[str, Any]:
        """The keys every environment shares, in KEY_ORDER."""
        spec: dict[str, Any] = {}
        if self.base:
            spec["<<"] = self.base
        spec["image"] = self.image
        spec.update(self.hardening)
        for key in KEY_ORDER[2:]:
            value = getattr(self, key, None)
            if key == "depends_on" and value:
                value = {name: {"condition": condition} for name, condition in value.items()}
            if key in self.compose_only:
                value = [*(value or []), *self.compose_only[key]]
            if value:
                spec[key] = value
        spec["deploy"] = {"resources": {"limits": {"pids": self.pids}}}
        return {key: spec[key] for key in KEY_ORDER if key in spec}

    def compose_env(self, env: str, profile: dict[str, Any]) -> dict[str, Any]:
        """What compose.<env>.yaml says of it."""
        spec: dict[str, Any] = {
            "restart": "no" if self.one_off else profile["restart"],
            "logging": {"driver": "none"} if self.unlogged else LOGGING,
        }
        if env in self.cgroup_parent:
            spec["cgroup_parent"] = self.cgroup_parent[env]
        if self.env_file:
            spec["env_file"] = [f"env/{env}.app.env"]
        deploy: dict[str, Any] = {}
        if env in self.replicas:
            deploy["replicas"] = self.replicas[env]
        deploy["resources"] = {"limits": self.limits[env]}
        spec["deploy"] = deploy
        for key, source in (("ports", self.ports), ("volumes", self.env_volumes), ("secrets", self.env_secrets),
                            ("environment", self.env_environment), ("networks", self.env_networks)):
            if source.get(env):
                spec[key] = source[env]
        return spec


    def compose_whole(self, env: str, profile: dict[str, Any]) -> dict[str, Any]:
        """Both parts in one mapping, for a service that only some environments run (then
        compose.<env>.yaml defines it whole)."""
        spec = self.compose()
        for key, value in self.compose_env(env, profile).items():
            if key == "networks":
                networks = spec.get("networks", [])
                merged = {net: {} for net in networks} if isinstance(networks, list) else dict(networks)
                spec["networks"] = {**merged, **value}
            elif key == "deploy":  # the shared PID limit joins the environment's limits
                limits = {**spec.get("deploy", {}).get("resources", {}).get("limits", {}), **value["resources"]["limits"]}
                spec["deploy"] = {**value, "resources": {**value["resources"], "limits": limits}}
            else:
                spec[key] = value
        return spec


# --- rendering: YAML text in the style of the rest of the files -------------------------------------

FLOW_KEYS = {"networks"}  # mappings written on one line
MAX_FLOW = 100  # longer lists are written one item per line


# libyaml's loader when PyYAML has it (10x faster here), else the pure-Python one: both safe.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PLAIN = re.compile(r"^[A-Za-z0-9_/.-][A-Za-z0-9_/.=,+-]*$")  # no ":": 1:30 is a number in YAML 1.1


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Alias):
        return str(value)
    return _string(value)


@functools.lru_cache(maxsize=4096)
def _string(value: str) -> str:
    """Plain where YAML reads it back as the same string (not a number, boolean, null or list);
    else quoted. Cached: a project's files repeat the same few hundred values."""
    if PLAIN.match(value) and _load(f"k: {value}") == {"k": value} and _load(f"- {value}") == [value]:
        return value
    return json.dumps(value)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=SAFE_LOADER)


def _item(value: Any, pad: str) -> str:
    """A list item's text after "- ": a program of several lines (a health check's) as a literal
    block, each line as written."""
    if isinstance(value, str) and "\n" in value and not value[:1].isspace() and not value.endswith("\n"):
        return "|-\n" + "\n".join(f"{pad}    {line}" if line else "" for line in value.split("\n"))
    return json.dumps(value) if isinstance(value, (list, dict)) else _scalar(value)


def to_yaml(spec: dict[str, Any], indent: int, notes: dict[str, str] | None = None) -> str:
    """A mapping as block YAML at `indent` spaces; lists and FLOW_KEYS on one line (JSON, which is
    YAML); each note as a comment above its key."""
    pad = " " * indent
    lines = []
    for key, value in spec.items():
        for line in ((notes or {}).get(key) or "").splitlines():
            lines.append(f"{pad}# {line}")
        flow = json.dumps(value) if isinstance(value, (list, dict)) else ""
        if isinstance(value, dict) and value and key not in FLOW_KEYS:
            lines.append(f"{pad}{key}:")
            lines.append(to_yaml(value, indent + 2))
        elif isinstance(value, list) and len(value) > 1 and len(pad + key + flow) > MAX_FLOW:
            lines.append(f"{pad}{key}:")
            lines.extend(f"{pad}  - {_item(item, pad)}" for item in value)
        elif isinstance(value, (list, dict)):
            lines.append(f"{pad}{key}: {flow}")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(lines)


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key, as yamllint (and kubectl) write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def to_manifests(documents: list[Any]) -> str:
    """Kubernetes objects as YAML documents, keys in the order built, "---" between them."""
    return "---\n".join(yaml.dump(doc, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False, width=120)
                         for doc in documents).rstrip("\n")
