"""Helpers for the e2e tier: a rendered stack driven through its own scripts/compose.sh against a
real Docker engine. Traffic goes only to 127.0.0.1 (published ports) or to containers on
networks these tests create."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import answers, run


_next_port = [0]


def free_port() -> int:
    """A free port on 127.0.0.1, from a range of its own per test worker (parallel workers never
    pick the same one), below the kernel's ephemeral ports."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    low, high = 20000 + worker * 1000, 20999 + worker * 1000
    for _ in range(high - low + 1):
        port = low + _next_port[0] % (high - low + 1)
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return run("docker", *args, check=check, timeout=timeout)


def address_seen_from(source: str, target: str) -> str:
    """TARGET container's address on a network it shares with the SOURCE container."""
    theirs = inspect(target)["NetworkSettings"]["Networks"]
    shared = sorted(set(theirs) & set(inspect(source)["NetworkSettings"]["Networks"]))
    assert shared, f"{source} shares no network with {target}"
    return theirs[shared[0]]["IPAddress"]


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


@dataclass
class Stack:
    """One environment of a rendered project, on 127.0.0.1 ports chosen for this run."""

    project: Path
    env: str
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def answers(self) -> dict:
        return answers(self.project)

    @property
    def name(self) -> str:
        return f"{self.answers['project_slug']}-{self.env}"

    @property
    def tls(self) -> bool:
        return self.env != "dev" and self.answers["tls"] != "none"

    @property
    def domain(self) -> str:
        return self.answers.get(f"domain_{self.env}", "localhost")

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return run(self.project / "scripts" / "compose.sh", self.env, *args, cwd=self.project, check=check,
                   timeout=timeout)

    def configure(self) -> None:
        """First-use setup through the project's own script, then this run's ports on 127.0.0.1."""
        self.remove_leftovers()
        run(self.project / "scripts" / "init-env.sh", self.env)
        self.ports = {"HTTP_PORT": free_port(), "HTTPS_PORT": free_port()}
        env_file = self.project / "env" / f"{self.env}.env"
        lines = env_file.read_text().splitlines()
        for line in lines:
            key = line.split("=", 1)[0]
            if key.endswith("_PORT") and key not in self.ports and not line.startswith("#"):
                self.ports[key] = free_port()
        settings = {**{k: str(v) for k, v in self.ports.items()}, "BIND_ADDRESS": "127.0.0.1"}
        kept = [line for line in lines if line.split("=", 1)[0] not in settings]
        env_file.write_text("\n".join(kept + [f"{k}={v}" for k, v in settings.items()]) + "\n")

    def alias_earlier_pins(self) -> list[str]:
        """A project of an earlier release pins earlier tags of the same images (nginx:1.27-bookworm
        where the catalogue now says nginx:1.30-trixie). The lab holds the images of the current
        pins; each earlier tag this project needs is tagged onto the lab's image of the same
        repository (a stand-in is the same Debian package under any tag). Returns "old <- lab"."""
        images = self.compose("config", "--images").stdout.split()
        app = self.answers["image_name"]
        local = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        aliased = []
        for ref in images:
            repository = ref.rsplit(":", 1)[0]
            if repository.endswith(app) or ref in local:
                continue
            same = [image for image in local if image.rsplit(":", 1)[0] == repository]
            if not same:
                pytest.fail(f"{self.name}: the lab has no image of {repository} for {ref} (tests/lab/prepare.sh)", pytrace=False)
            docker("tag", same[0], ref)
            aliased.append(f"{ref} <- {same[0]}")
        return aliased

    @classmethod
    def rendered(cls, copie_session, answers: dict, env: str = "production") -> "Stack":
        """A fresh rendering with these answers, set up for ENV through its own scripts."""
        result = copie_session.copy(extra_answers=answers)
        assert result.exit_code == 0, result.exception
        stack = cls(result.project_dir, env)
        stack.configure()
        return stack

    def up(self, *services: str) -> None:
        """Build and start (all services, or these and their dependencies), waiting for health."""
        proc = self.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "300", *services, check=False, timeout=900)
        if proc.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "40", check=False).stdout
            pytest.fail(f"{self.name}: up failed\n{proc.stderr[-3000:]}\n--- service logs ---\n{logs[-6000:]}", pytrace=False)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)

    def containers(self, service: str | None = None, all_states: bool = False) -> list[dict]:
        args = ["ps", "--format", "json"] + (["--all"] if all_states else []) + ([service] if service else [])
        out = self.compose(*args).stdout.strip()
        if not out:
            return []
        return json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines()]

    def container(self, service: str) -> str:
        """A running container of SERVICE (the first by name), found by Compose's labels: tests
        poll through this (each Prometheus query), and `docker ps` takes a tenth of the CPU of
        `scripts/compose.sh ENV ps` (the engine's version, then Compose's CLI: docs/testing.md)."""
        labels = [f"label=com.docker.compose.{key}={value}" for key, value in
                  (("project", self.name), ("service", service), ("oneoff", "False"))]
        names = sorted(docker("ps", *(arg for label in labels for arg in ("--filter", label)), "--format", "{{.Names}}").stdout.split())
        assert names, f"no running container for {service}"
        return names[0]

    def remove_leftovers(self) -> None:
        """What an interrupted earlier run left under this stack's Compose project (its name comes from
        the answers, the same at every run), removed before first use: a database volume kept from it
        would hold other passwords than this rendering's secrets. Safe while this run holds the e2e
        lock (conftest.hold_the_e2e_lock): no other run is live, and no two stacks of one run share a
        name. Containers of the tests attached to its networks go too."""
        left = self.leftovers()
        attached = [name for network in left["networks"]
                    for name in docker("network", "inspect", "--format",
                                       "{{range .Containers}}{{.Name}} {{end}}", network, check=False).stdout.split()]
        if any(left.values()):
            print(f"{self.name}: removing what an earlier run left: {left}", file=sys.stderr)
        for name in sorted(set(left["containers"] + attached)):
            docker("rm", "--force", name, check=False)
        for name in left["volumes"]:
            docker("volume", "rm", "--force", name, check=False)
        for name in left["networks"]:
            docker("network", "rm", name, check=False)
        assert self.leftovers() == {"containers": [], "volumes": [], "networks": []}, f"{self.name}: leftovers stay"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks still labelled with this compose project."""
        label = f"label=com.docker.compose.project={self.name}"
        return {
            "containers": docker("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split(),
            "volumes": docker("volume", "ls", "--filter", label, "--format", "{{.Name}}").stdout.split(),
            "networks": docker("network", "ls", "--filter", label, "--format", "{{.Name}}").stdout.split(),
        }

    # --- HTTP through the proxy, with curl, to 127.0.0.1 only ------------------------------------

    def url(self, path: str, secure: bool | None = None, host: str | None = None) -> tuple[str, list[str]]:
        """The URL of path through the proxy and curl's options to reach it on 127.0.0.1 under the
        stack's host name (or `host`)."""
        secure = self.tls if secure is None else secure
        port = self.ports["HTTPS_PORT" if secure else "HTTP_PORT"]
        host = host or (self.domain if self.tls else "localhost")
        scheme = "https" if secure else "http"
        return f"{scheme}://{host}:{port}{path}", ["--resolve", f"{host}:{port}:127.0.0.1", "--insecure"]

    def http(self, method: str, path: str, body: dict | None = None, secure: bool | None = None) -> tuple[int, str, dict]:
        """One request through the proxy on 127.0.0.1 under the stack's host name (Host and, with
        TLS, SNI; the certificate not verified), in this process (tests make thousands: a curl each
        cost about 10 ms of CPU). -> (status, body, {"location": the redirect's absolute URL or
        ""}), or (0, the error, {}) without an answer within 10 s."""
        secure = self.tls if secure is None else secure
        port = self.ports["HTTPS_PORT" if secure else "HTTP_PORT"]
        host = self.domain if self.tls else "localhost"
        headers = {"Host": f"{host}:{port}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        try:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if secure:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                connection.sock = context.wrap_socket(connection.sock, server_hostname=host)
            with contextlib.closing(connection):
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                text = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as error:
            return 0, f"{method} {path}: {error!r}", {}
        location = response.getheader("Location")
        base = f"{'https' if secure else 'http'}://{host}:{port}{path}"
        return response.status, text, {"location": urllib.parse.urljoin(base, location) if location else ""}

    def get_json(self, path: str) -> dict:
        status, text, _ = self.http("GET", path)
        assert status == 200, f"GET {path}: {status} {text}"
        return json.loads(text)


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})", pytrace=False)


def healthy(container: str) -> bool:
    state = inspect(container)["State"]
    return state["Running"] and state.get("Health", {}).get("Status") == "healthy"


class Load:
    """Steady requests to a stack's proxy on 127.0.0.1 (or the address of a lab node made by the
    test, `host`), from a few threads, each request on a new
    connection (as independent clients), bounded in time. Records status and latency of each.
    `requests` gives each thread its (method, path), e.g. [("GET", "/")] * 3 + [("POST", "/")];
    by default `threads` threads GET `path`."""

    def __init__(self, port: int, path: str = "/", threads: int = 4, pause: float = 0.02, limit_seconds: float = 900,
                 requests: list[tuple[str, str]] | None = None, host: str = "127.0.0.1"):
        self.host, self.port, self.pause, self.limit = host, port, pause, limit_seconds
        self.requests = requests or [("GET", path)] * threads
        # (start time, status or 0 for an error, seconds, (method, path))
        self.results: list[tuple[float, int, float, tuple[str, str]]] = []
        self.failed: list[tuple[str, str, int]] = []  # (method, path, status) of each failure
        self.succeeded: dict[tuple[str, str], int] = {}  # (method, path) -> requests answered 2xx
        self.bodies: set[bytes] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=r, daemon=True) for r in self.requests]

    def _run(self, method: str, path: str) -> None:
        deadline = time.monotonic() + self.limit
        body = b"{}" if method == "POST" else None
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
                response = conn.getresponse()
                status, content = response.status, response.read(400)
                conn.close()
                if path == "/":
                    with self._lock:
                        self.bodies.add(content)
            except (OSError, http.client.HTTPException):
                status = 0
            with self._lock:
                self.results.append((started, status, time.monotonic() - started, (method, path)))
                if 200 <= status < 300:
                    self.succeeded[(method, path)] = self.succeeded.get((method, path), 0) + 1
                else:
                    self.failed.append((method, path, status))
            time.sleep(self.pause)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def failures(self, since: float = 0.0) -> list[tuple[float, int, float]]:
        return [r for r in self.results if r[0] >= since and not 200 <= r[1] < 300]

    def versions(self) -> set[str]:
        """The versions that answered (the example apps put theirs in the body of "/")."""
        found = set()
        for body in self.bodies:
            try:
                found.add(json.loads(body)["version"])
            except (ValueError, KeyError, TypeError):
                pass
        return found

    def latencies(self, start: float = 0.0, end: float = float("inf"), skip: tuple[str, ...] = ()) -> list[float]:
        """Sorted seconds of the successful requests started in [start, end], except paths in skip."""
        return sorted(r[2] for r in self.results if start <= r[0] <= end and 200 <= r[1] < 300 and r[3][1] not in skip)


# Users of a stack during a switch, each thread its own kind of request: GETs, POSTs (which no
# proxy retries on another replica) and slow requests that keep a stopping replica busy.
TRAFFIC = [("GET", "/")] * 3 + [("POST", "/"), ("GET", "/slow")]
SLOW_ROUTE = '''    if path == "/slow":
        time.sleep(1.5)
        return "slow", "200 OK", {"slow": True}, None
'''


def print_load_table(columns: list[str], rows: list[str]) -> None:
    """A benchmark's Markdown table under the line that says how it was measured (TRAFFIC)."""
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; load: {len(TRAFFIC)} clients "
          f"({', '.join(f'{m} {p}' for m, p in TRAFFIC)}), a new connection per request, 20 ms pause; "
          f"{time.strftime('%Y-%m-%d')}.\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    print("\n".join(rows))


def build_release(project: Path, env: str, version: str, timeout: float = 900) -> None:
    """scripts/build.sh ENV VERSION when this host has no image of VERSION yet (as a release
    pipeline builds once and deploys by name; deploy.sh itself never builds a named version).
    Tests that deploy under load build first: the build is not part of the deploy they measure
    (and load sent during it only costs CPU). Projects of releases without build.sh build in deploy.sh."""
    build = project / "scripts" / "build.sh"
    image = f"{answers(project)['image_name']}:{version}"
    if build.exists() and docker("image", "inspect", image, check=False).returncode != 0:
        run(build, env, version, cwd=project, timeout=timeout)


def deploy_release(project: Path, env: str, version: str, *args: str, check: bool = True,
                   timeout: float = 900) -> subprocess.CompletedProcess:
    """scripts/deploy.sh ENV VERSION, built first where needed (build_release)."""
    build_release(project, env, version, timeout)
    return run(project / "scripts" / "deploy.sh", env, version, *args, cwd=project, check=check, timeout=timeout)


def add_slow_route(project: Path) -> None:
    """The Python example app answers /slow after 1.5 s (patched in before the first build)."""
    main = project / "app" / "main.py"
    main.write_text(main.read_text().replace('    if path == "/error":', SLOW_ROUTE + '    if path == "/error":'))


def load_cells(load: Load, steady_end: float) -> str:
    """A benchmark row's load columns: requests after steady_end | failed | steady p50 / p99 |
    during p50 / p99 | p99 ratio. Latency of the ordinary requests (the /slow ones only prove that
    nothing is cut off)."""
    steady = load.latencies(end=steady_end, skip=("/slow",))
    during = load.latencies(start=steady_end, skip=("/slow",))
    requests = sum(1 for r in load.results if r[0] >= steady_end)
    return (f"{requests} | {len(load.failures(since=steady_end))} | "
            f"{percentile(steady, 50) * 1000:.1f} / {percentile(steady, 99) * 1000:.1f} | "
            f"{percentile(during, 50) * 1000:.1f} / {percentile(during, 99) * 1000:.1f} | "
            f"{percentile(during, 99) / percentile(steady, 99):.1f}x")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- a real multi-node Docker Swarm on this machine (tests/lab/swarm.sh) ------------------------------

SWARM_LAB = Path(__file__).resolve().parent / "lab" / "swarm.sh"


@dataclass
class SwarmLab:
    """N dockerd instances in network namespaces made by tests/lab/swarm.sh, joined in a Swarm, and a
    registry every node pulls from at this host's 127.0.0.1:PORT. `settings` are its exports."""

    settings: dict[str, str]

    @classmethod
    def up(cls, nodes: int = 3) -> "SwarmLab":
        # A lab still there was left by an interrupted run: this run holds the e2e lock (conftest),
        # and one module at a time uses the lab.
        if Path(os.environ.get("SWARM_LAB_STATE", "/run/dp-swarm-lab")).exists():
            print("swarm lab: removing the lab an earlier run left", file=sys.stderr)
            run("bash", SWARM_LAB, "down", timeout=300)
        proc = run("bash", SWARM_LAB, "up", str(nodes), timeout=300)
        settings = dict(line.removeprefix("export ").split("=", 1) for line in proc.stdout.splitlines()
                        if line.startswith("export "))
        return cls({k: v.strip('"') for k, v in settings.items()})

    def down(self) -> None:
        run("bash", SWARM_LAB, "down", check=False, timeout=300)

    def kill(self, node: int) -> None:
        run("bash", SWARM_LAB, "kill", str(node), timeout=60)

    @property
    def registry(self) -> str:
        return self.settings["SWARM_REGISTRY"]

    @property
    def edge(self) -> str:
        return self.settings["SWARM_EDGE"]

    @property
    def ipsec(self) -> bool:
        return self.settings.get("SWARM_IPSEC") == "yes"

    def docker(self, *args: str, node: int = 1, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        host = self.settings["SWARM_NODES"].split()[node - 1]
        return run("docker", "--host", host, *args, check=check, timeout=timeout)

    def tasks(self, service: str) -> list[dict]:
        """The service's tasks that should run: node, image, state."""
        out = self.docker("service", "ps", "--no-trunc", "--filter", "desired-state=running", "--format", "{{json .}}",
                          service).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def target(self, project: Path, env: str = "production", node: int = 1) -> None:
        """Points ENV of a rendered project at this Swarm, as an operator would: first-use setup,
        DEPLOY_TARGET=swarm with the manager and the nodes, APP_IMAGE in the lab registry, the
        proxy on port 8080 of the nodes, every other image of the stack pushed to the registry and
        named in the env file (X_IMAGE); NODE labelled as the edge and the data node. Where the
        kernel has no IPsec, the backend network's encryption is removed from the stack file."""
        from extensions.catalogue import IMAGES, image_var

        slug = answers(project)["project_slug"]
        run(project / "scripts" / "init-env.sh", env, cwd=project)
        settings = {"DEPLOY_TARGET": "swarm", "SWARM_HOST": self.settings["SWARM_HOST"],
                    "SWARM_NODE_HOST": self.settings["SWARM_NODE_HOST"], "APP_IMAGE": f"{self.registry}/{slug}",
                    "HTTP_PORT": "8080"}
        stack_file = project / "swarm" / f"{env}.yaml"
        text = stack_file.read_text()
        for key in IMAGES:
            if "${%s:?" % image_var(key) in text:
                settings[image_var(key)] = self.push(IMAGES[key], f"library/{IMAGES[key]}")
        env_file = project / "env" / f"{env}.env"
        kept = [line for line in env_file.read_text().splitlines() if line.split("=", 1)[0] not in settings]
        env_file.write_text("\n".join(kept + [f"{k}={v}" for k, v in settings.items()]) + "\n")
        for role in ("edge", "db"):
            self.docker("node", "update", "--label-add", f"{slug}.{role}=true", f"node{node}")
        if not self.ipsec:
            encrypted = '    driver_opts:\n      encrypted: "true"\n'
            assert encrypted in text, "the backend network is encrypted as rendered"
            stack_file.write_text(text.replace(encrypted, ""))
            print("this kernel has no IPsec: the backend network runs unencrypted in this test")

    def push(self, local: str, path: str) -> str:
        """A local image pushed to the lab registry as PATH; returns the registry reference."""
        ref = f"{self.registry}/{path}"
        docker("tag", local, ref)
        docker("push", "--quiet", ref, timeout=600)
        return ref
