"""Deploy benchmark: failed requests and latency under steady load during a deploy and a rollback
(rolling and blue-green), against the same load in steady state just before (the baseline), plus
wall times.

    python3 tests/benchmarks/deploy.py [--proxy nginx ...] [--strategy blue-green ...] [--before COMMIT] [--rounds N]
    # needs tests/lab/prepare.sh; --before: the same, rendered from COMMIT, measured in the same run

Each proxy: a production stack (Python example, PostgreSQL, 2 replicas) deployed as v1; then 20 s
of steady load, a deploy of v2 under the same load, and a rollback to v1 under load (N times,
pooled). Prints Markdown.

"During" is the whole operation (the backup, the migration job and the new replicas' start
included) and 5 s after it. "Switch" is the part from the script's "switching the proxy" line
(the new replicas are healthy) to 2 s after the script's exit: the proxy's switch, its
confirmation, rolling the old colour's stop, and the new replicas' first requests (Caddy reads
the switch on its next request). A template without that line has no switch figures. Rolling's
switch is also split at the script's "stopping the replicas of" line: the switch and the drain
before it, the old colour's `docker stop` / `docker rm` from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import run  # noqa: E402
from e2e_support import Load, Stack, deploy_release, docker, percentile  # noqa: E402


SWITCH_LINE = "switching the proxy to"
SWITCH_TAIL = 2.0  # seconds after the script's exit still counted as the switch
RETIRE_LINE = "stopping the replicas of"  # rolling: the old colour's stop begins


def timed_run(*cmd, cwd: Path) -> dict[str, float]:
    """Runs a script; returns when each of its stderr lines of interest arrived (time.monotonic)."""
    marks: dict[str, float] = {}
    lines: list[str] = []
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = threading.Thread(target=proc.stdout.read, daemon=True)
    out.start()
    for line in proc.stderr:
        lines.append(line)
        if SWITCH_LINE in line:
            marks.setdefault("switch", time.monotonic())
        if RETIRE_LINE in line:
            marks.setdefault("retire", time.monotonic())
    if proc.wait(timeout=900) != 0:
        sys.exit(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{''.join(lines)}")
    marks["end"] = time.monotonic()
    return marks


def measure(stack: Stack, action) -> dict:
    with Load(stack.ports["HTTP_PORT"], "/", threads=4, pause=0.02) as load:
        time.sleep(20)
        steady_end = time.monotonic()
        started = time.perf_counter()
        marks = action()
        wall = time.perf_counter() - started
        time.sleep(5)
    switch = load.latencies(start=marks["switch"], end=marks["end"] + SWITCH_TAIL) if "switch" in marks else []
    split = "switch" in marks and "retire" in marks
    return {
        "requests": sum(1 for r in load.results if r[0] >= steady_end),
        "failed": len(load.failures(since=steady_end)),
        "steady": load.latencies(end=steady_end),
        "during": load.latencies(start=steady_end),
        "switch": switch,
        "before_stop": load.latencies(start=marks["switch"], end=marks["retire"]) if split else [],
        "from_stop": load.latencies(start=marks["retire"], end=marks["end"] + SWITCH_TAIL) if split else [],
        "switch_seconds": marks["end"] + SWITCH_TAIL - marks["switch"] if "switch" in marks else float("nan"),
        "wall": wall,
    }


def pooled(rounds: list[dict]) -> dict:
    """The rounds of one operation as one sample: latencies pooled, counts summed, times' medians."""
    joined = {key: sorted(v for m in rounds for v in m[key]) for key in ("steady", "during", "switch", "before_stop", "from_stop")}
    joined.update({key: sum(m[key] for m in rounds) for key in ("requests", "failed")})
    joined.update({key: sorted(m[key] for m in rounds)[len(rounds) // 2] for key in ("wall", "switch_seconds")})
    return joined


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.1f}" if values else "-"


def ratio(values: list[float], baseline: list[float]) -> str:
    return f"{percentile(values, 99) / percentile(baseline, 99):.2f}x" if values else "-"


def bench(proxy: str, strategy: str, scratch: Path, ref: str = "HEAD", rounds: int = 1) -> list[str]:
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
        operations = (
            ("deploy v1 -> v2", lambda: timed_run(deploy, "production", "v2", cwd=project)),
            ("rollback v2 -> v1", lambda: timed_run(project / "scripts" / "rollback.sh", "production", cwd=project)),
        )
        measured: dict[str, list[dict]] = {name: [] for name, _ in operations}
        for _ in range(rounds):
            for name, action in operations:
                measured[name].append(measure(stack, action))
        for name, _ in operations:
            m = pooled(measured[name])
            rows.append(
                f"| {proxy} | {strategy} | {'now' if ref == 'HEAD' else ref} | {name} | {m['requests']} | {m['failed']} | "
                f"{ms(m['steady'], 50)} / {ms(m['steady'], 99)} | {ms(m['during'], 50)} / {ms(m['during'], 99)} | "
                f"{ratio(m['during'], m['steady'])} | {len(m['switch'])} in {m['switch_seconds']:.1f} s | {ms(m['switch'], 50)} / {ms(m['switch'], 99)} | "
                f"{ratio(m['switch'], m['steady'])} | {ratio(m['before_stop'], m['steady'])} / {ratio(m['from_stop'], m['steady'])} | "
                f"{m['wall']:.1f} |"
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
    parser.add_argument("--rounds", type=int, default=1, help="deploy and roll back this many times, pooled [1]")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for proxy in args.proxy or ["nginx", "caddy", "traefik"]:
            for strategy in args.strategy or ["rolling", "blue-green"]:
                for ref in ([args.before] if args.before else []) + ["HEAD"]:
                    rows += bench(proxy, strategy, Path(scratch), ref, args.rounds)
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; load: 4 clients, a new connection per request, "
          f"20 ms pause; {args.rounds} round(s) pooled; {time.strftime('%Y-%m-%d')}.\n")
    print("| proxy | strategy | template | operation | requests during it | failed | steady p50 / p99 (ms) | during p50 / p99 (ms) | "
          "p99 ratio | requests in the switch (median window) | switch p50 / p99 (ms) | switch p99 ratio | "
          "rolling: switch p99 ratio before / from the old colour's stop | wall time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
