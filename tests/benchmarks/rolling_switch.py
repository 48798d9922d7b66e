"""Rolling deploy benchmark: a production stack per proxy (rolling strategy, 2 replicas) with two
released versions; under steady load, scripts/deploy.sh alternates between them N times, each
deploy replacing every replica (the new colour starts, the proxy switches to it and confirms,
the old colour finishes its requests and stops). Failed requests and latency against the same load
before the first deploy (the baseline).

The load is the release e2e test's (tests/e2e_support.py TRAFFIC): GETs, POSTs, which no proxy
retries on another replica, and 1.5 s requests that keep a stopping replica busy.

    python3 tests/benchmarks/rolling_switch.py [--proxy caddy ...] [--deploys 15]   # needs tests/lab/prepare.sh
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
from e2e_support import TRAFFIC, Load, Stack, add_slow_route, deploy_release, docker, load_cells, percentile, print_load_table  # noqa: E402

REPLICAS = 2


def bench(proxy: str, deploys: int, scratch: Path) -> str:
    project = scratch / proxy
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, quiet=True,
             data={"project_name": f"Bench rolling {proxy}", "proxy": proxy, "environments": ["production"],
                   "monitoring": "none", "database": "none", "cache": "none", "tls": "none", "process_manager": "none",
                   "app_replicas": REPLICAS, "deploy_strategy": "rolling"})
    add_slow_route(project)
    stack = Stack(project, "production")
    stack.configure()
    deploy = project / "scripts" / "deploy.sh"
    try:
        for version in ("v1", "v2"):
            deploy_release(project, "production", version)
        walls = []
        with Load(stack.ports["HTTP_PORT"], requests=TRAFFIC, pause=0.02) as load:
            time.sleep(20)
            steady_end = time.monotonic()
            for i in range(deploys):
                started = time.perf_counter()
                run(deploy, "production", ("v1", "v2")[i % 2], cwd=project, timeout=900)
                walls.append(time.perf_counter() - started)
            time.sleep(3)
        walls.sort()
        return (f"| {proxy} | {deploys} | {deploys * REPLICAS} | {load_cells(load, steady_end)} | "
                f"{percentile(walls, 50):.1f} / {walls[-1]:.1f} |")
    finally:
        stack.down()
        for version in ("v1", "v2"):
            docker("image", "rm", "--force", f"{stack.answers['image_name']}:{version}", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", choices=["nginx", "caddy", "traefik"], action="append")
    parser.add_argument("--deploys", type=int, default=15, help="each replaces every replica (2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [bench(proxy, args.deploys, Path(scratch)) for proxy in args.proxy or ["nginx", "caddy", "traefik"]]
    print_load_table(["proxy", "rolling deploys", "replicas replaced", "requests during them", "failed", "steady p50 / p99 (ms)",
                      "during p50 / p99 (ms)", "p99 ratio", "seconds per deploy (median / max)"], rows)


if __name__ == "__main__":
    main()
