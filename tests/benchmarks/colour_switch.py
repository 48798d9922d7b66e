"""Blue-green switch benchmark: a production stack per proxy with two released versions, one in
each colour; under steady load, the active colour is switched N times with the project's own
shell functions (write_proxy_upstream, reload_proxy), and each switch is checked to have taken
effect. Failed requests and latency against the same load before the first switch (the baseline).

    python3 tests/benchmarks/colour_switch.py [--proxy caddy ...] [--switches 30]   # needs tests/lab/prepare.sh
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import run  # noqa: E402
from e2e_support import Load, Stack, docker, percentile  # noqa: E402

SWITCH = """source scripts/lib/common.sh
compose_cmd production
active=$(active_colour production)
next=$([[ $active == blue ]] && echo green || echo blue)
write_proxy_upstream production "$next"
reload_proxy >/dev/null
echo "$next"
"""


def bench(proxy: str, switches: int, scratch: Path) -> str:
    project = scratch / proxy
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, vcs_ref="HEAD", quiet=True,
             data={"project_name": f"Bench switch {proxy}", "proxy": proxy, "environments": ["production"],
                   "monitoring": "none", "database": "none", "cache": "none", "tls": "none", "process_manager": "none",
                   "app_replicas": 2, "deploy_strategy": "blue-green"})
    stack = Stack(project, "production")
    stack.configure()
    try:
        for version in ("v1", "v2"):
            run(project / "scripts" / "deploy.sh", "production", version, cwd=project, timeout=900)
        expected = {"blue": "v1", "green": "v2"}
        missed = 0
        with Load(stack.ports["HTTP_PORT"], "/", threads=4, pause=0.02) as load:
            time.sleep(20)
            steady_end = time.monotonic()
            started = time.perf_counter()
            for _ in range(switches):
                colour = run("bash", "-c", SWITCH, cwd=project).stdout.strip()
                time.sleep(2)
                served = json.loads(stack.http("GET", "/")[1])["version"]
                missed += served != expected[colour]
            wall = time.perf_counter() - started
        steady, during = load.latencies(end=steady_end), load.latencies(start=steady_end)
        requests = sum(1 for r in load.results if r[0] >= steady_end)
        return (f"| {proxy} | {switches} | {missed} | {requests} | {len(load.failures(since=steady_end))} | "
                f"{percentile(steady, 50) * 1000:.1f} / {percentile(steady, 99) * 1000:.1f} | "
                f"{percentile(during, 50) * 1000:.1f} / {percentile(during, 99) * 1000:.1f} | "
                f"{percentile(during, 99) / percentile(steady, 99):.1f}x | {wall / switches:.1f} |")
    finally:
        stack.down()
        for version in ("v1", "v2"):
            docker("image", "rm", "--force", f"{stack.answers['image_name']}:{version}", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", choices=["nginx", "caddy", "traefik"], action="append")
    parser.add_argument("--switches", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [bench(proxy, args.switches, Path(scratch)) for proxy in args.proxy or ["nginx", "caddy", "traefik"]]
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; load: 4 clients, a new connection per request, "
          f"20 ms pause; {time.strftime('%Y-%m-%d')}.\n")
    print("| proxy | switches | switches not in effect 2 s later | requests during them | failed | steady p50 / p99 (ms) | "
          "during p50 / p99 (ms) | p99 ratio | seconds per switch (incl. 2 s check) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
