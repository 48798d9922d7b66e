"""Swarm against Compose, side by side in one run: the same rendered project (Go example, nginx,
PostgreSQL, Redis, 2 replicas) deployed to one Compose host (127.0.0.1) and to a three-node Swarm
made here (tests/lab/swarm.sh). Under steady load (GETs and POSTs, a new connection per request),
each target gets N deploys alternating between two released versions and N rollbacks; wall time
and failed requests per operation. Then a Swarm worker running an app task dies: seconds until two
healthy tasks serve again, and failed requests.

    python3 tests/benchmarks/swarm.py [--cycles 3]       # needs tests/lab/prepare.sh; root
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import run  # noqa: E402
from e2e_support import Load, Stack, SwarmLab, docker, percentile, wait_until  # noqa: E402

ANSWERS = dict(runtime="go", environments=["production"], database="postgres", cache="redis", monitoring="none",
               proxy="nginx", tls="none", process_manager="none", ci="none", orchestrators=["swarm"], app_replicas=2)
REQUESTS = [("GET", "/")] * 3 + [("POST", "/")]


def render(scratch: Path, name: str) -> Path:
    project = scratch / name
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, quiet=True, data={**ANSWERS, "project_name": f"Bench {name}"})
    run("git", "init", "-q", cwd=project)
    return project


def measure(project: Path, host: str, port: int, cycles: int) -> dict[str, list]:
    """N deploys (v2, v1, ...) then N rollbacks, each timed, under one steady load."""
    deploy, rollback = project / "scripts" / "deploy.sh", project / "scripts" / "rollback.sh"
    times: dict[str, list] = {"deploy": [], "rollback": []}
    with Load(port, host=host, requests=REQUESTS) as load:
        time.sleep(5)
        for i in range(cycles):
            started = time.perf_counter()
            run(deploy, "production", ("v2", "v1")[i % 2], cwd=project, timeout=900)
            times["deploy"].append(time.perf_counter() - started)
        for _ in range(cycles):
            started = time.perf_counter()
            run(rollback, "production", cwd=project, timeout=900)
            times["rollback"].append(time.perf_counter() - started)
        time.sleep(3)
    times["requests"], times["failed"] = [len(load.results)], [len(load.failed)]
    return times


def compose_target(scratch: Path, cycles: int) -> dict[str, list]:
    project = render(scratch, "compose")
    stack = Stack(project, "production")
    stack.configure()
    try:
        for version in ("v1", "v2"):
            run(project / "scripts" / "build.sh", "production", version, cwd=project, timeout=900)
        run(project / "scripts" / "deploy.sh", "production", "v1", cwd=project, timeout=900)
        return measure(project, "127.0.0.1", stack.ports["HTTP_PORT"], cycles)
    finally:
        stack.down()


def swarm_target(scratch: Path, cycles: int) -> tuple[dict[str, list], tuple[float, int, int]]:
    project = render(scratch, "swarm")
    lab = SwarmLab.up(3)
    try:
        lab.target(project)
        for version in ("v1", "v2"):
            run(project / "scripts" / "build.sh", "production", version, cwd=project, timeout=900)
        run(project / "scripts" / "deploy.sh", "production", "v1", cwd=project, timeout=900)
        times = measure(project, lab.edge, 8080, cycles)
        app = "bench-swarm-production_app"
        victim = next(int(t["Node"].removeprefix("node")) for t in lab.tasks(app) if t["Node"] != "node1")
        with Load(8080, host=lab.edge, requests=REQUESTS) as load:
            time.sleep(3)
            killed = time.monotonic()
            lab.kill(victim)
            wait_until(lambda: len([t for t in lab.tasks(app) if t["Node"] != f"node{victim}"
                                    and t["CurrentState"].startswith("Running")]) == 2, 180, "recovery", interval=0.5)
            recovery = time.monotonic() - killed
            time.sleep(3)
        after = [r for r in load.results if r[0] >= killed]
        return times, (recovery, len(after), sum(1 for r in after if not 200 <= r[1] < 300))
    finally:
        lab.down()
        for version in ("v1", "v2"):
            docker("image", "rm", "--force", f"{lab.registry}/bench-swarm:{version}", check=False)


def cells(times: dict[str, list]) -> str:
    return (f"{percentile(sorted(times['deploy']), 50):.1f} / {max(times['deploy']):.1f} | "
            f"{percentile(sorted(times['rollback']), 50):.1f} / {max(times['rollback']):.1f} | "
            f"{times['requests'][0]} | {times['failed'][0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="deploys, then as many rollbacks, per target")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        compose = compose_target(Path(scratch), args.cycles)
        swarm, (recovery, requests, failed) = swarm_target(Path(scratch), args.cycles)
    ratio = percentile(sorted(swarm["deploy"]), 50) / percentile(sorted(compose["deploy"]), 50)
    print(f"{time.strftime('%Y-%m-%d')}, {args.cycles} deploys and {args.cycles} rollbacks per target, 2 replicas, "
          f"4 clients (3 GET, 1 POST), a new connection per request.\n")
    print("| target | deploy s (median / max) | rollback s (median / max) | requests | failed |")
    print("|---|---|---|---|---|")
    print(f"| Compose, one host (rolling) | {cells(compose)} |")
    print(f"| Swarm, 3 nodes | {cells(swarm)} |")
    print(f"\nSwarm deploy / Compose deploy (median): {ratio:.1f}x. Node loss: two healthy tasks again after "
          f"{recovery:.1f} s; {failed} of {requests} requests failed.")


if __name__ == "__main__":
    main()
