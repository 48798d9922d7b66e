"""Deploy benchmark: failed requests and latency under steady load during a deploy and a rollback
(rolling and blue-green), against the same load in steady state just before (the baseline), plus
wall times.

    python3 tests/benchmarks/deploy.py [--proxy nginx ...] [--strategy blue-green ...] [--before COMMIT]
    # needs tests/lab/prepare.sh; --before: the same, rendered from COMMIT, measured in the same run

Each proxy: a production stack (Python example, PostgreSQL, 2 replicas) deployed as v1; then 20 s
of steady load, a deploy of v2 under the same load, and a rollback to v1 under load. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import run  # noqa: E402
from e2e_support import Load, Stack, deploy_release, docker, percentile  # noqa: E402


def measure(stack: Stack, action) -> dict:
    with Load(stack.ports["HTTP_PORT"], "/", threads=4, pause=0.02) as load:
        time.sleep(20)
        steady_end = time.monotonic()
        started = time.perf_counter()
        action()
        wall = time.perf_counter() - started
        time.sleep(5)
    steady = load.latencies(end=steady_end)
    during = load.latencies(start=steady_end)
    return {
        "requests": sum(1 for r in load.results if r[0] >= steady_end),
        "failed": len(load.failures(since=steady_end)),
        "steady": (percentile(steady, 50), percentile(steady, 99)),
        "during": (percentile(during, 50), percentile(during, 99)),
        "wall": wall,
    }


def bench(proxy: str, strategy: str, scratch: Path, ref: str = "HEAD") -> list[str]:
    project = scratch / f"{proxy}-{strategy}-{ref}"
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, vcs_ref=ref, quiet=True,
             data={"project_name": f"Bench deploy {proxy} {strategy} {ref}", "proxy": proxy, "environments": ["production"],
                   "monitoring": "none", "cache": "none", "tls": "none", "process_manager": "none", "app_replicas": 2,
                   "deploy_strategy": strategy})
    stack = Stack(project, "production")
    stack.configure()
    deploy = project / "scripts" / "deploy.sh"
    rows = []
    try:
        deploy_release(project, "production", "v1")
        run(project / "scripts" / "build.sh", "production", "v2", cwd=project, timeout=900)  # the figures are the switch's
        for name, action in (
            ("deploy v1 -> v2", lambda: run(deploy, "production", "v2", cwd=project, timeout=900)),
            ("rollback v2 -> v1", lambda: run(project / "scripts" / "rollback.sh", "production", cwd=project, timeout=900)),
        ):
            m = measure(stack, action)
            rows.append(
                f"| {proxy} | {strategy} | {'now' if ref == 'HEAD' else ref} | {name} | {m['requests']} | {m['failed']} | {m['steady'][0] * 1000:.1f} / {m['steady'][1] * 1000:.1f} | "
                f"{m['during'][0] * 1000:.1f} / {m['during'][1] * 1000:.1f} | {m['during'][1] / m['steady'][1]:.1f}x | {m['wall']:.1f} |"
            )
    finally:
        stack.down()
        for version in ("v1", "v2"):
            docker("image", "rm", "--force", f"{stack.answers['image_name']}:{version}", check=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", choices=["nginx", "caddy", "traefik"], action="append")
    parser.add_argument("--strategy", choices=["rolling", "blue-green"], action="append")
    parser.add_argument("--before", help="a commit to measure too, side by side (the previous figures)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for proxy in args.proxy or ["nginx", "caddy", "traefik"]:
            for strategy in args.strategy or ["rolling", "blue-green"]:
                for ref in ([args.before] if args.before else []) + ["HEAD"]:
                    rows += bench(proxy, strategy, Path(scratch), ref)
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; load: 4 clients, a new connection per request, "
          f"20 ms pause; {time.strftime('%Y-%m-%d')}.\n")
    print("| proxy | strategy | template | operation | requests during it | failed | steady p50 / p99 (ms) | during p50 / p99 (ms) | p99 ratio | wall time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
