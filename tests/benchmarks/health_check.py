"""CPU of one app health check, per runtime: the check as a typical Dockerfile writes it (urllib,
fetch: the baseline), the check of a previous commit, and now, measured in turn in one run.

    python3 tests/benchmarks/health_check.py [--checks 40] [--rounds 5] [--before COMMIT] [--path /s/200]
    # after tests/lab/prepare.sh; --path /s/503: a failing app's check (every 250 ms while it starts)

A server (tests/status_server.py: /s/CODE answers CODE) runs in a container of the Python image; each
check runs by `docker exec` in a container of the runtime's image that shares the server's network
namespace (its hostname and /etc/hosts, as in a replica). What a check costs is the CPU time the
checking container's cgroup gains over --checks checks (the server's work is in its own cgroup;
the exec itself, runc and the shim, is the same for every check and not counted; reading the
cgroup's count is, a fraction of a millisecond spread over the checks). Rounds
alternate the variants. Prints Markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from extensions.catalogue import IMAGES  # noqa: E402
from extensions.model import app_healthcheck  # noqa: E402

PORT = 8080
RUNTIMES = ("python", "node")


def typical_check(runtime: str, path: str) -> list[str]:
    """What a Dockerfile without curl typically runs: the runtime's own client at the loopback address."""
    if runtime == "python":
        return ["python", "-c", "import sys,urllib.request as r\n"
                f"sys.exit(r.urlopen('http://127.0.0.1:{PORT}{path}',timeout=2).status!=200)"]
    return ["node", "-e", f"fetch('http://127.0.0.1:{PORT}{path}').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]


def sh(*cmd: str) -> str:
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def check_at(commit: str, runtime: str, path: str) -> list[str]:
    """The check extensions/model.py wrote at COMMIT (its extensions/ unpacked and imported apart)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "extensions"], capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as where:
        tarfile.open(fileobj=BytesIO(archive)).extractall(where, filter="data")
        code = ("import json,sys;from extensions.model import app_healthcheck as c;"
                f"print(json.dumps(c({runtime!r},{PORT},{path!r})))")
        out = subprocess.run([sys.executable, "-c", code], cwd=where, capture_output=True, text=True, check=True).stdout
    return json.loads(out)[1:]


# The container's CPU time in microseconds: cgroup v2's cpu.stat, else v1's cpuacct (nanoseconds).
CPU_USEC = ("if [ -r /sys/fs/cgroup/cpu.stat ]; then sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat;"
            " else echo $(( $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage) / 1000 )); fi")


def cpu_usec(container: str) -> int:
    return int(sh("docker", "exec", container, "sh", "-c", CPU_USEC))


def check_once(container: str, argv: list[str], passes: bool) -> None:
    """One check, by docker exec; it must pass (or fail) as the path says, else the run stops."""
    if (subprocess.run(["docker", "exec", container, *argv], capture_output=True).returncode == 0) != passes:
        sys.exit(f"{container}: {' '.join(argv)[:80]}... did not {'pass' if passes else 'fail'}")


def cost_ms(container: str, argv: list[str], checks: int, passes: bool) -> float:
    before = cpu_usec(container)
    for _ in range(checks):
        check_once(container, argv, passes)
    return (cpu_usec(container) - before) / 1000 / checks


def image_said(image: str) -> str:
    provides = sh("docker", "image", "inspect", "--format", '{{ index .Config.Labels "dp.lab.provides" }}', image).strip()
    return f"{image}, a STAND-IN: {provides}" if provides else image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="a5c5284", help="the commit whose check is the previous figure")
    parser.add_argument("--path", default="/s/200", help="what the checks ask: /s/200 passes, /s/503 fails")
    args = parser.parse_args()
    passes = args.path.startswith("/s/2")
    variants = {runtime: {"baseline": typical_check(runtime, args.path), f"before ({args.before})": check_at(args.before, runtime, args.path),
                          "now": app_healthcheck(runtime, PORT, args.path)[1:]} for runtime in RUNTIMES}
    tag = os.getpid()
    server = f"dp-bench-check-server-{tag}"
    checkers = {runtime: f"dp-bench-check-{runtime}-{tag}" for runtime in RUNTIMES}
    try:
        sh("docker", "run", "--detach", "--name", server, "--volume", f"{ROOT}/tests/status_server.py:/status_server.py:ro",
           "--entrypoint", "python3", IMAGES["python"], "/status_server.py", "0.0.0.0", str(PORT))
        for runtime, name in checkers.items():
            sh("docker", "run", "--detach", "--name", name, "--network", f"container:{server}", "--entrypoint", "sleep",
               IMAGES[runtime], "3600")
        up = app_healthcheck("python", PORT, "/s/200")[1:]
        for _ in range(50):  # the server answers before anything is timed
            if subprocess.run(["docker", "exec", checkers["python"], *up], capture_output=True).returncode == 0:
                break
        else:
            sys.exit("the status server did not start")
        for runtime, name in checkers.items():  # every variant passes (or fails) as the path says
            for argv in variants[runtime].values():
                check_once(name, argv, passes)
        costs = {runtime: {variant: [] for variant in variants[runtime]} for runtime in RUNTIMES}
        for _ in range(args.rounds):
            for runtime, name in checkers.items():
                for variant, argv in variants[runtime].items():
                    costs[runtime][variant].append(cost_ms(name, argv, args.checks, passes))
    finally:
        subprocess.run(["docker", "rm", "--force", server, *checkers.values()], capture_output=True)
    engine = sh("docker", "version", "--format", "{{.Server.Version}}").strip()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; Docker Engine {engine}; "
          f"{args.rounds} rounds of {args.checks} checks of {args.path}, medians of CPU ms per check.\n")
    names = list(variants["python"])
    print("| runtime (image) | " + " | ".join(f"{name} (ms)" for name in names) + " | now / baseline | now / before |")
    print("|---" * (len(names) + 3) + "|")
    for runtime in RUNTIMES:
        medians = {variant: statistics.median(values) for variant, values in costs[runtime].items()}
        now, baseline, before = medians["now"], medians["baseline"], medians[names[1]]
        print(f"| {runtime} ({image_said(IMAGES[runtime])}) | " + " | ".join(f"{medians[name]:.1f}" for name in names)
              + f" | {now / baseline:.2f}x | {now / before:.2f}x |")


if __name__ == "__main__":
    main()
