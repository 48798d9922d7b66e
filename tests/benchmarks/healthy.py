"""Time to healthy: a production stack with a fresh database, from `up` to every service healthy,
against a bare container of the same database image accepting connections, measured in one run.

    python3 tests/benchmarks/healthy.py [--runs 3] [--before COMMIT]   # after tests/lab/prepare.sh

Per round, in turn: the bare database (`docker run`, then `pg_isready` over TCP every 0.1 s, as
the stack's health check asks), the stack rendered from COMMIT (the previous figure), the stack
rendered now on this engine, and the same with the engine treated as older than 25
(ENGINE_API_VERSION=1.41: no compose.engine-25.yaml). Images are built before the clock starts;
volumes are removed after each run, so every database starts empty. The default answers without
monitoring (PostgreSQL, Redis, nginx, 2 app replicas). Prints Markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from extensions.catalogue import IMAGES  # noqa: E402

# Monitoring off: Grafana, Loki and Alloy have no stand-in on the lab (docs/testing.md).
VARIANTS = {"defaults, no monitoring": {"monitoring": "none"}}


def sh(*cmd, cwd=None, env=None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def render(where: Path, name: str, ref: str, answers: dict) -> Path:
    project = where / name
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, vcs_ref=ref, quiet=True,
             data={"project_name": f"Bench healthy {name}", "environments": ["dev", "production"],
                   "process_manager": "none", **answers})
    sh(project / "scripts" / "compose.sh", "production", "build", cwd=project)
    return project


def bare_database() -> float:
    name = f"dp-bench-bare-db-{os.getpid()}"
    started = time.perf_counter()
    sh("docker", "run", "--detach", "--rm", "--name", name, "--env", "POSTGRES_PASSWORD=bench", IMAGES["postgres"])
    try:
        while subprocess.run(["docker", "exec", name, "pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
            if time.perf_counter() - started > 120:
                sys.exit("the bare database did not accept connections within 120 s")
            time.sleep(0.1)
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True)


def stack(project: Path, env: dict | None = None) -> float:
    script = project / "scripts" / "compose.sh"
    started = time.perf_counter()
    sh(script, "production", "up", "--detach", "--wait", cwd=project, env=env)
    seconds = time.perf_counter() - started
    sh(script, "production", "down", "--volumes", cwd=project, env=env)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default="5cc87db", help="the commit whose stack is the previous figure")
    args = parser.parse_args()
    engine = sh("docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})").strip()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, answers in VARIANTS.items():
            slug = "".join(c for c in label if c.isalnum())[:12]
            before = render(Path(scratch), f"before-{slug}", args.before, answers)
            now = render(Path(scratch), f"now-{slug}", "HEAD", answers)
            times: dict[str, list[float]] = {"bare": [], "before": [], "older engine": [], "now": []}
            for _ in range(args.runs):
                times["bare"].append(bare_database())
                times["before"].append(stack(before))
                times["older engine"].append(stack(now, {"ENGINE_API_VERSION": "1.41"}))
                times["now"].append(stack(now))
            rows.append((label, {key: statistics.median(values) for key, values in times.items()}))

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; Docker Engine {engine}; "
          f"{args.runs} runs, medians; {time.strftime('%Y-%m-%d')}.\n")
    print(f"| stack (production, python, postgres, redis, nginx) | bare database accepts (s) | before ({args.before}) (s) | "
          "now, engine < 25 (s) | now (s) | now / bare database |")
    print("|---|---|---|---|---|---|")
    for label, m in rows:
        print(f"| {label} | {m['bare']:.1f} | {m['before']:.1f} ({m['before'] / m['bare']:.1f}x) | "
              f"{m['older engine']:.1f} ({m['older engine'] / m['bare']:.1f}x) | {m['now']:.1f} | {m['now'] / m['bare']:.1f}x |")


if __name__ == "__main__":
    main()
