"""Blue-green switch benchmark: a production stack per proxy with two released versions, one in
each colour; under steady load, the active colour is switched N times with the project's own
shell function (proxy_route, which returns once the proxy confirms the switch), and each switch is
checked to be in effect at once. Failed requests and latency against the same load before the
first switch (the baseline). The load is the release e2e test's: GETs, POSTs and 1.5 s requests.

    python3 tests/benchmarks/colour_switch.py [--proxy caddy ...] [--switches 30]   # needs tests/lab/prepare.sh
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import run  # noqa: E402
from e2e_support import TRAFFIC, Load, Stack, add_slow_route, deploy_release, docker, load_cells, print_load_table  # noqa: E402

SWITCH = """source scripts/lib/common.sh
active=$(active_colour production)
next=$([[ $active == blue ]] && echo green || echo blue)
proxy_route production "$next"
echo "$next" >.deploy/production/active-colour
echo "$next"
"""


def bench(proxy: str, switches: int, scratch: Path) -> str:
    project = scratch / proxy
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, quiet=True,
             data={"project_name": f"Bench switch {proxy}", "proxy": proxy, "environments": ["production"],
                   "monitoring": "none", "database": "none", "cache": "none", "tls": "none", "process_manager": "none",
                   "app_replicas": 2, "deploy_strategy": "blue-green"})
    add_slow_route(project)
    stack = Stack(project, "production")
    stack.configure()
    try:
        for version in ("v1", "v2"):
            deploy_release(project, "production", version)
        expected = {"blue": "v1", "green": "v2"}
        missed = 0
        with Load(stack.ports["HTTP_PORT"], requests=TRAFFIC, pause=0.02) as load:
            time.sleep(20)
            steady_end = time.monotonic()
            started = time.perf_counter()
            for _ in range(switches):
                colour = run("bash", "-c", SWITCH, cwd=project).stdout.strip()
                # Confirmed means in effect: the next requests reach the new colour only.
                answers = [stack.http("GET", "/") for _ in range(4)]
                bad = [a for a in answers if a[0] != 200]
                if bad:
                    print(f"switch to {colour}: {bad}", file=sys.stderr)
                served = {json.loads(a[1])["version"] for a in answers if a[0] == 200}
                missed += served != {expected[colour]}
                time.sleep(2)
            wall = time.perf_counter() - started
        return f"| {proxy} | {switches} | {missed} | {load_cells(load, steady_end)} | {wall / switches:.1f} |"
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
    print_load_table(["proxy", "switches", "switches not in effect when confirmed", "requests during them", "failed",
                      "steady p50 / p99 (ms)", "during p50 / p99 (ms)", "p99 ratio", "seconds per switch (incl. a 2 s pause)"], rows)


if __name__ == "__main__":
    main()
