"""Shared fixtures: the answer matrix, rendering through pytest-copie, and checker helpers."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Pairwise matrix: every choice of every question appears at least once, plus the defaults.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "py-uv-mariadb-caddy-acme": dict(
        python_installer="uv", environments=["production"], database="mariadb", cache="none",
        monitoring="prometheus-loki", proxy="caddy", tls="acme", deploy_strategy="blue-green", grafana_public=True,
        acme_email="ops@deployment-patterns.dev", domain_production="shop.deployment-patterns.dev",
        process_manager="supervisor", alert_receiver="webhook", ci="gitlab",
        orchestrators=["kubernetes"], kubernetes_ingress_class="traefik", kubernetes_cluster_issuer="letsencrypt-prod",
        # Metrics from a server of their own (rendered and checked statically: the example app
        # serves them on app_port; tests/test_e2e_monitoring_metrics_port.py runs one that does not).
        metrics_port="9464",
    ),
    "py-poetry-traefik-nodb": dict(
        python_installer="poetry", environments=["dev"], database="none", cache="redis",
        monitoring="none", proxy="traefik", tls="none", process_manager="none", ci="none", orchestrators=["kubernetes"],
    ),
    # Pipenv: the example's Pipfile and Pipfile.lock (with both drivers), the build's pipenv steps.
    "py-pipenv-postgres-nginx": dict(
        python_installer="pipenv", environments=["staging", "production"], database="postgres", cache="redis",
        monitoring="none", proxy="nginx", tls="none", process_manager="none", ci="github",
    ),
    "node-postgres-traefik-files": dict(
        runtime="node", environments=["dev", "production"], database="postgres", cache="none",
        monitoring="prometheus-loki", proxy="traefik", tls="files", deploy_strategy="blue-green", grafana_public=True,
        orchestrators=["kubernetes"], app_max_replicas=5, kubernetes_postgres="cloudnative-pg",
        kubernetes_backup_destination="s3://node-backups/shop", kubernetes_backup_endpoint="https://minio.example.org:9000",
    ),
    "node-mariadb-nginx-existing": dict(
        runtime="node", environments=["staging"], database="mariadb", cache="redis", monitoring="none",
        proxy="nginx", tls="none", process_manager="supervisor", example_app=False, ci="gitlab",
    ),
    "go-caddy-files": dict(
        runtime="go", database="none", cache="redis", monitoring="prometheus", proxy="caddy", tls="files", orchestrators=["swarm"],
        alert_receiver="email", alert_email_to="oncall@example.org", alert_smtp_smarthost="mail.example.org:587",
        alert_smtp_username="alertmanager",
    ),
    "go-postgres-traefik-acme-existing": dict(
        runtime="go", environments=["production"], database="postgres", cache="none", monitoring="prometheus",
        proxy="traefik", tls="acme", deploy_strategy="blue-green", process_manager="none", example_app=False,
        acme_email="ops@deployment-patterns.dev", domain_production="billing.deployment-patterns.dev",
        project_name="Billing API", image_name="ghcr.io/acme/billing-api", app_replicas=3,
        app_cpus="2", app_memory="1G",
    ),
    "py-pip-mariadb-nginx-existing": dict(
        environments=["dev", "staging"], database="mariadb", cache="redis", monitoring="prometheus",
        proxy="nginx", example_app=False, deploy_strategy="blue-green", alert_receiver="email", orchestrators=["swarm"],
    ),
}

_rendered: dict[str, Path] = {}


@pytest.fixture(scope="session")
def render(copie_session):
    """render(name) -> project dir of VARIANTS[name], rendered once per session."""

    def _render(name: str) -> Path:
        if name not in _rendered:
            result = copie_session.copy(extra_answers=VARIANTS[name])
            assert result.exit_code == 0, f"{name}: {result.exception}"
            _rendered[name] = result.project_dir
        return _rendered[name]

    return _render


def require_tool(name: str) -> str:
    """A checker's path; a missing checker fails the test (tests/lab/install-tools.sh installs it)."""
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: run tests/lab/install-tools.sh", pytrace=False)
    return path


def check_jsonschema(*args: str | os.PathLike) -> None:
    """check-jsonschema's own command, run in this process: its import (about 2.7 s of CPU, most of
    it a grammar rfc3987-syntax builds) is paid once per pytest worker, not once per file checked.
    Findings fail the test, with the command's output."""
    from check_jsonschema.cli.main_command import main
    from click.testing import CliRunner

    argv = [str(a) for a in args]
    result = CliRunner().invoke(main, argv)
    if result.exit_code != 0:
        pytest.fail(f"check-jsonschema {' '.join(argv)} exited {result.exit_code}\n{result.output}\n{result.exception!r}",
                    pytrace=False)


def run(*cmd: str | os.PathLike, cwd: Path | None = None, env: dict | None = None, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, text=True, capture_output=True, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return proc


def answers(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def compose_config(project: Path, env: str) -> dict:
    """The merged, interpolated Compose model of one environment, as scripts/compose.sh sees it."""
    require_tool("docker")
    proc = run(project / "scripts" / "compose.sh", env, "config", "--format", "json", cwd=project)
    import json

    return json.loads(proc.stdout)


def pytest_configure(config):
    # pytest-copie renders the template in "." by default: make that the repository wherever pytest runs.
    if config.getoption("template") == ".":
        config.option.template = str(ROOT)
    if not hasattr(config, "workerinput") and "not e2e" not in (config.option.markexpr or ""):
        config._e2e_lock = hold_the_e2e_lock()


# One run with e2e tests per machine at a time: runs share the Docker engine, and with it the
# stacks' names (fixed by their answers), their volumes and the Swarm lab. A second run waits for
# the first (up to DP_E2E_LOCK_WAIT seconds); holding the lock, a run may remove what an
# interrupted one left behind (Stack.configure, SwarmLab.up). The kernel releases it however the
# run ends. Held by the controller only: its xdist workers are its own.
E2E_LOCK = Path(os.environ.get("DP_E2E_LOCK", "/tmp/deployment-patterns-e2e.lock"))


def hold_the_e2e_lock():
    waited = 0
    wait = int(os.environ.get("DP_E2E_LOCK_WAIT", "2700"))
    lock = open(E2E_LOCK, "a+")
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if waited == 0:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                print(f"conftest: another test run with e2e tests holds {E2E_LOCK} ({holder}): "
                      f"waiting for it, up to {wait} s (DP_E2E_LOCK_WAIT)", file=sys.stderr, flush=True)
            if waited >= wait:
                raise pytest.UsageError(f"another test run with e2e tests still holds {E2E_LOCK} after {wait} s: "
                                        "wait for it to end (or stop it), then run again")
            time.sleep(5)
            waited += 5
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} in {Path.cwd()}\n")
    lock.flush()
    return lock


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Parallel e2e (pytest-xdist, --dist loadgroup): the tests that share a stack (a module-scoped
    `stack` fixture, or one variant) run on one worker, in order; other stacks run side by side."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        # The whole variant matrix of the static checks, and updates from every release: minutes
        # of CPU that the inner loop skips (`-m "not e2e and not slow"`); tests/run.sh runs them.
        if item.module.__name__ == "test_update" or (
                item.module.__name__ == "test_static_checks" and params.get("variant", "defaults") != "defaults"):
            item.add_marker(pytest.mark.slow)
        if "e2e" not in item.keywords:
            continue
        # A module-scoped stack's parameter, or a variant or shape; otherwise the whole module:
        # its tests may share a module-scoped fixture, which must exist once.
        key = params.get("stack") or params.get("variant") or params.get("shape") or "module"
        item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:{key}"))


LAB_STATE = ROOT / "tests" / "lab" / ".state"


@pytest.fixture(scope="session")
def lab():
    """A Docker engine and every image the stacks use: tests/lab/prepare.sh, once per session
    (idempotent; stand-ins are rebuilt only when their recipe changes)."""
    proc = subprocess.run(["bash", str(ROOT / "tests" / "lab" / "prepare.sh")], text=True, capture_output=True)
    if proc.returncode != 0:
        pytest.fail(f"tests/lab/prepare.sh failed:\n{proc.stderr[-4000:]}", pytrace=False)
    return lab_images()


ENGINE_25_API = (1, 44)  # what compose.engine-25.yaml needs (scripts/lib/common.sh asks the same)


def engine() -> tuple[str, tuple[int, int] | None]:
    """The running Docker engine's version and API version, as scripts/compose.sh sees them."""
    out = subprocess.run(["docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
                         text=True, capture_output=True).stdout.split()
    if len(out) != 2:
        return "", None
    major, minor = (int(n) for n in out[1].split("."))
    return out[0], (major, minor)


def lab_images() -> list[dict]:
    record = LAB_STATE / "images.tsv"
    if not record.exists():
        return []
    rows = [line.split("\t") for line in record.read_text().splitlines()[1:]]
    return [{"image": image, "source": source, "provides": provides} for image, source, provides in rows]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Says which images the e2e tier ran on: official, or a stand-in built here."""
    ran = [report for key in ("passed", "failed", "error") for report in terminalreporter.stats.get(key, [])]
    if not any(getattr(report, "keywords", {}).get("e2e") and report.when == "call" for report in ran):
        return
    images = lab_images()
    terminalreporter.section("images used by the e2e tier")
    if not images:
        terminalreporter.write_line("no record (tests/lab/prepare.sh did not finish)")
    for row in images:
        terminalreporter.write_line(f"{row['source']:9} {row['image']:55} {row['provides']}")
    version, api = engine()
    if api:
        terminalreporter.write_line(
            f"Docker Engine {version} (API {'.'.join(map(str, api))}): compose.engine-25.yaml (start_interval) "
            + ("applied" if api >= ENGINE_25_API else "NOT applied: the engine is older than 25"))
    terminalreporter.write_line(
        "STAND-IN = built here from Debian packages because no registry was reachable; not the official image. "
        "Grafana, Loki, Alloy and cAdvisor have no stand-in: no e2e test starts them (tests/test_e2e_monitoring.py "
        "runs the rest of the monitoring stack), and their configuration is validated statically (tests/test_static_checks.py)."
    )


# What an app's health check must conclude from each answer of the status server.
HEALTH_ANSWERS = {"/s/200": True, "/s/204": True, "/moved": True, "/s/404": False, "/s/500": False, "/s/503": False}
