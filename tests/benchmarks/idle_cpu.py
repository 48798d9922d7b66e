"""CPU of a production stack at rest: the host's CPU over a minute with the stack up and idle
(no request), less the same minute with nothing running, for the stack rendered from a previous
commit and now, measured in turn in one run.

    python3 tests/benchmarks/idle_cpu.py [--rounds 3] [--seconds 60] [--before COMMIT]
    # after tests/lab/prepare.sh, on an otherwise idle host

Per round, in turn: the empty host, the stack rendered from COMMIT, the stack rendered now. Each
stack is started (`up --wait`), left alone --settle seconds (its services are healthy: their
checks run at their interval), then the host's busy time (/proc/stat: user, nice, system, irq,
softirq, steal) is read over --seconds; then it is removed with its volumes. What a stack at rest
costs is mostly its health checks: each is an exec (runc, the shim and dockerd) whatever its
command. Meant for Docker Engine 25+, where compose.engine-25.yaml sets the interval at rest (an
older engine keeps the 5 s checks). The default answers without monitoring (PostgreSQL, Redis,
nginx, 2 app replicas; Grafana, Loki and Alloy have no stand-in here). Prints Markdown for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from healthy import render, sh  # the same rendered project, built before any clock starts

ANSWERS = {"monitoring": "none"}
TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS


def busy_over(seconds: float) -> float:
    start = busy_seconds()
    time.sleep(seconds)
    return busy_seconds() - start


def at_rest(project: Path | None, seconds: float, settle: float) -> float:
    """CPU-seconds the host spends over SECONDS with PROJECT's stack up and idle (None: nothing up)."""
    if project is None:
        time.sleep(settle)
        return busy_over(seconds)
    script = project / "scripts" / "compose.sh"
    sh(script, "production", "up", "--detach", "--wait", cwd=project)
    try:
        time.sleep(settle)
        return busy_over(seconds)
    finally:
        sh(script, "production", "down", "--volumes", cwd=project)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=10)
    parser.add_argument("--before", default="8b65680", help="the commit whose stack is the previous figure")
    args = parser.parse_args()
    engine = sh("docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})").strip()
    with tempfile.TemporaryDirectory() as scratch:
        projects = {label: render(Path(scratch), label, ref, ANSWERS) for label, ref in (("before", args.before), ("now", "HEAD"))}
        cpu: dict[str, list[float]] = {"empty": [], "before": [], "now": []}
        for _ in range(args.rounds):
            cpu["empty"].append(at_rest(None, args.seconds, args.settle))
            for label, project in projects.items():
                cpu[label].append(at_rest(project, args.seconds, args.settle))
    per_minute = {label: statistics.median(values) * 60 / args.seconds for label, values in cpu.items()}
    stack = {label: per_minute[label] - per_minute["empty"] for label in ("before", "now")}
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; Docker Engine {engine}; {args.rounds} rounds of "
          f"{args.seconds:.0f} s, medians; {time.strftime('%Y-%m-%d')}.\n")
    print(f"| stack at rest (production, python, postgres, redis, nginx, 2 replicas) | empty host (CPU-s per min) | "
          f"before ({args.before}): stack's CPU-s per min | now: stack's CPU-s per min | now / before |")
    print("|---|---|---|---|---|")
    print(f"| defaults, no monitoring | {per_minute['empty']:.1f} | {stack['before']:.1f} ({stack['before'] / 60:.1%} of a core) | "
          f"{stack['now']:.1f} ({stack['now'] / 60:.1%} of a core) | {stack['now'] / stack['before']:.2f}x |")


if __name__ == "__main__":
    main()
