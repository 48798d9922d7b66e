"""The controls a rendered stack promises, as data: scripts/audit.sh checks the running containers
against them (scripts/lib/compliance.sh) and docs/compliance.md maps each to the file that
implements it; both render from controls() and audit_plan() here.

A service that the model lets deviate from a control needs a reason in REASONS: a template change
that weakens a service without saying why fails to render (UnexplainedDeviation)."""

from __future__ import annotations

from typing import Any

from .services import HARDENING, Service

# id, CIS Docker Benchmark v1.6 recommendation, what the audit checks, where the stack does it.
CONTROLS: tuple[dict[str, str], ...] = (
    dict(id="non-root", cis="4.1", title="runs as a non-root user",
         check="Config.User is set and is not UID 0 or root",
         implemented_in="compose.yaml `user:` of each service; Dockerfile `USER` for the app"),
    dict(id="read-only-rootfs", cis="5.12", title="root filesystem mounted read-only",
         check="HostConfig.ReadonlyRootfs",
         implemented_in="compose.yaml `x-hardening` (read_only, tmpfs for what must be written)"),
    dict(id="not-privileged", cis="5.4", title="not privileged",
         check="HostConfig.Privileged is false",
         implemented_in="compose.yaml (no service sets privileged)"),
    dict(id="capabilities-dropped", cis="5.3", title="all Linux capabilities dropped, none added",
         check="HostConfig.CapDrop is ALL and CapAdd is empty",
         implemented_in="compose.yaml `x-hardening` (cap_drop: [ALL])"),
    dict(id="no-new-privileges", cis="5.25", title="cannot gain privileges (setuid, file capabilities)",
         check="HostConfig.SecurityOpt has no-new-privileges",
         implemented_in="compose.yaml `x-hardening` (security_opt)"),
    dict(id="memory-limit", cis="5.10", title="memory limited",
         check="HostConfig.Memory > 0",
         implemented_in="compose.ENV.yaml `deploy.resources.limits.memory` (sizes per environment)"),
    dict(id="cpu-limit", cis="5.11", title="CPU limited",
         check="HostConfig.NanoCpus > 0",
         implemented_in="compose.ENV.yaml `deploy.resources.limits.cpus`"),
    dict(id="pids-limit", cis="5.28", title="process count limited",
         check="HostConfig.PidsLimit > 0",
         implemented_in="compose.yaml `deploy.resources.limits.pids`"),
    dict(id="health-check", cis="5.26", title="health checked while running",
         check="Config.Healthcheck has a test",
         implemented_in="compose.yaml `healthcheck:` of each service"),
    dict(id="restart-policy", cis="5.14", title="restart policy of its environment",
         check="HostConfig.RestartPolicy.Name is the environment's (compose.ENV.yaml `restart:`)",
         implemented_in="compose.ENV.yaml `restart:` (no in dev, unless-stopped or always elsewhere)"),
    dict(id="host-namespaces", cis="5.9, 5.15, 5.16, 5.20, 5.30", title="shares no host namespace",
         check="network, PID, IPC, UTS and user namespace modes are not host",
         implemented_in="compose.yaml (no service sets network_mode, pid, ipc, uts or userns_mode: host)"),
    dict(id="no-runtime-socket", cis="5.31", title="no container runtime socket mounted",
         check="no mount source ends in docker.sock, containerd.sock or podman.sock",
         implemented_in="compose.yaml volumes"),
    dict(id="no-sensitive-host-paths", cis="5.5", title="no sensitive host directory mounted",
         check="no mount of /, /boot, /dev, /etc, /lib, /proc, /sys, /usr, /var/lib/docker or /var/run",
         implemented_in="compose.yaml volumes (the project's own config/, metrics/ and .deploy/ only)"),
    dict(id="published-ports", cis="5.7, 5.13", title="publishes only what its environment allows",
         check="each published container port is one the environment's compose file publishes, "
               "on loopback unless it is the proxy's",
         implemented_in="compose.ENV.yaml `ports:` (only the proxy outside dev; Grafana on loopback)"),
    dict(id="no-secret-in-environment", cis="4.10", title="no secret in an environment variable",
         check="no variable named like a password, token or key (other than *_FILE), and no value "
               "equal to a file in secrets/ENV/",
         implemented_in="secrets as files (`secrets:`, *_FILE variables; docker/entrypoint.sh)"),
)
CONTROL_IDS = tuple(control["id"] for control in CONTROLS)

# (role, control) -> why the model lets that service deviate (docs/compliance.md, the audit's output).
REASONS: dict[tuple[str, str], str] = {
    ("proxy", "non-root"): "tls: acme keeps the ACME account and certificates in a volume the image creates "
                           "root-owned; UID 0 without any capability",
    ("alloy", "non-root"): "reads every container's logs through the Docker API; no capability",
    ("alloy", "no-runtime-socket"): "reads every container's logs through the Docker API: host-root equivalent",
    ("cadvisor", "non-root"): "per-container metrics read the host's cgroups and Docker's state",
    ("cadvisor", "not-privileged"): "per-container metrics read the host's cgroups (opt-in profile host-agents)",
    ("cadvisor", "capabilities-dropped"): "privileged: capabilities do not apply",
    ("cadvisor", "no-sensitive-host-paths"): "reads /, /sys, /var/run and /var/lib/docker (opt-in profile host-agents)",
    ("proxy-exporter", "health-check"): "its image is FROM scratch, nothing to run a check with; "
                                        "up{job=\"proxy\"} and the ProxyDown alert watch it",
}

SENSITIVE_HOST_PATHS = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/var/lib/docker", "/var/run", "/run")
RUNTIME_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock")


class UnexplainedDeviation(AssertionError):
    """A service deviates from a control and REASONS says nothing about it."""


def _hardened(service: Service, key: str, value: Any) -> bool:
    """The service has the hardening anchor (directly or through the app's), or spells out `key`."""
    if service.base is not None:  # HARDENING, or Alias("app") which merges it
        return True
    return service.hardening.get(key) == value


def deviations(service: Service, app_user: str) -> list[str]:
    """The controls the model itself lets this service break (before any reason is looked up)."""
    user = app_user if service.base not in (None, HARDENING) and service.user is None else service.user
    host_paths = [v.split(":", 1)[0].rstrip("/") or "/" for v in service.volumes if v.startswith("/")]
    found = []
    if not user or user.split(":", 1)[0] in ("0", "root"):
        found.append("non-root")
    if not _hardened(service, "read_only", True):
        found.append("read-only-rootfs")
    if service.hardening.get("privileged"):
        found.append("not-privileged")
    if not _hardened(service, "cap_drop", ["ALL"]):
        found.append("capabilities-dropped")
    if not _hardened(service, "security_opt", ["no-new-privileges:true"]):
        found.append("no-new-privileges")
    if service.healthcheck is None or service.healthcheck.get("disable"):
        found.append("health-check")
    if service.pid == "host":
        found.append("host-namespaces")
    if any(path.endswith(RUNTIME_SOCKETS) for path in host_paths):
        found.append("no-runtime-socket")
    if any(path in SENSITIVE_HOST_PATHS or path.startswith(tuple(p + "/" for p in SENSITIVE_HOST_PATHS[1:]))
           for path in host_paths if not path.endswith(RUNTIME_SOCKETS)) or service.devices:
        found.append("no-sensitive-host-paths")
    return found


def exemptions(services: list[Service], app_user: str) -> dict[str, dict[str, str]]:
    """service -> control -> reason, for the services that run (one-offs exit before an audit)."""
    result: dict[str, dict[str, str]] = {}
    for service in services:
        if service.one_off:
            continue
        for control in deviations(service, app_user):
            reason = REASONS.get((service.role, control))
            if reason is None:
                raise UnexplainedDeviation(
                    f"service {service.name} breaks the control {control}: give the reason in "
                    f"extensions/compliance.py REASONS, or harden the service")
            result.setdefault(service.name, {})[control] = reason
    return result


def published(services: list[Service], env: str) -> dict[str, dict[str, Any]]:
    """service -> the container ports env publishes for it, and whether they may bind beyond loopback."""
    result = {}
    for service in services:
        ports = service.ports.get(env)
        if not ports:
            continue
        container_ports = sorted({int(mapping.rsplit(":", 1)[1]) for mapping in ports})
        result[service.name] = {"ports": container_ports, "any_address": service.role == "proxy"}
    return result


def audit_plan(services: list[Service], environments: list[str], profiles: dict[str, dict[str, Any]],
               app_user: str) -> dict[str, Any]:
    """What scripts/lib/compliance.sh and docs/compliance.md render."""
    return {
        "controls": [dict(control) for control in CONTROLS],
        "exemptions": exemptions(services, app_user),
        "restart": {env: profiles[env]["restart"] for env in environments},
        "published": {env: published(services, env) for env in environments},
        "optional": sorted(s.name for s in services if s.profiles),
    }
