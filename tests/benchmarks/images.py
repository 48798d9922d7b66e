"""Image benchmark: the rendered multi-stage Dockerfile against a single-stage baseline in the
style of `docker init` (same base image, same app, pip install, built in the same run).

    python3 tests/benchmarks/images.py [--runs 5]   # needs tests/lab/prepare.sh first

Two apps: the example app (binary wheels only), and the same app with psycopg2 built from its
sdist, where the baseline must install a compiler and headers to build at all while ours compiles
in the build stage only. Measures image size, cold build, warm rebuild after a one-line source
change (and whether the dependency layer was reused), what the runtime image carries, and the time
from `up` to all healthy for production. Builds alternate between ours and the baseline, `--runs`
pairs of each (a cold build of 3 s varies by a few tenths here); times are medians. Prints Markdown
for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
PSYCOPG2 = ("psycopg2", "2.9.13")
BUILD_PACKAGES = "gcc libc6-dev libpq-dev"
RUNTIME_PACKAGES = "libpq5"

# `docker init` (Python) in essence: one stage, dependencies through a cache mount, non-root user.
BASELINE = """\
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${{PYTHON_IMAGE}}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
ARG UID=10001
RUN adduser --disabled-password --gecos "" --home "/nonexistent" --shell "/sbin/nologin" --no-create-home --uid "${{UID}}" appuser
{apt}RUN --mount=type=cache,target=/root/.cache/pip \\
    --mount=type=bind,source=requirements.txt,target=requirements.txt \\
    python -m pip install -r requirements.txt
USER appuser
COPY . .
EXPOSE 8000
CMD ["gunicorn", "--config", "app/gunicorn_conf.py", "app.main:app"]
"""
BASELINE_APT = (
    "RUN apt-get update && apt-get install -y --no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*\n"
)


def sh(*cmd, cwd=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, text=True, capture_output=True)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def render(where: Path) -> Path:
    # A name of its own: its compose projects must not be those of a test run on the same engine.
    project = where / "svc"
    run_copy(str(ROOT), str(project), defaults=True, unsafe=True, vcs_ref="HEAD", quiet=True,
             data={"project_name": f"Bench images {where.name}", "monitoring": "none",
                   "environments": ["dev", "production"], "process_manager": "none"})
    return project


def add_psycopg2(project: Path) -> None:
    """psycopg2 from its sdist, pinned by hash like every other requirement."""
    download = project.parent / "sdist"
    sh(sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", download,
       f"{PSYCOPG2[0]}=={PSYCOPG2[1]}")
    sdist = next(download.glob("psycopg2-*.tar.gz"))
    digest = sh("sha256sum", sdist).stdout.split()[0]
    with (project / "requirements.txt").open("a") as requirements:
        requirements.write(f"--no-binary psycopg2\n{PSYCOPG2[0]}=={PSYCOPG2[1]} --hash=sha256:{digest}\n")
    shutil.rmtree(download)


def build(context: Path, tag: str, dockerfile: str, args: dict[str, str]) -> tuple[float, str]:
    cmd = ["docker", "build", "--progress", "plain", "-f", str(context / dockerfile), "-t", tag]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    started = time.perf_counter()
    proc = sh(*cmd, context)
    return time.perf_counter() - started, proc.stderr


def size_mb(tag: str) -> float:
    return int(sh("docker", "image", "inspect", "-f", "{{.Size}}", tag).stdout) / 1e6


def carries(tag: str) -> str:
    """Compiler, headers and package-manager caches found in the image (empty is the goal)."""
    probe = ("for p in /usr/bin/gcc /usr/bin/cc /usr/include/postgresql/libpq-fe.h /root/.cache/pip /var/lib/apt/lists/deb*; "
             "do [ -e \"$p\" ] && echo \"$p\"; done; true")
    return " ".join(sh("docker", "run", "--rm", "--user", "0", "--entrypoint", "sh", tag, "-c", probe).stdout.split()) or "none"


def cold_and_warm(project: Path, name: str, dockerfile: str, args: dict[str, str], step: str) -> dict:
    sh("docker", "builder", "prune", "--all", "--force")
    sh("sync")  # the previous build's writes reach the disk before the clock starts, not during this build
    tag = f"dp-bench/{name}:latest"
    cold, _ = build(project, tag, dockerfile, args)
    main = project / "app" / "main.py"
    original = main.read_text()
    main.write_text(original + f"\n# benchmark edit {time.time_ns()}\n")
    warm, log = build(project, tag, dockerfile, args)
    main.write_text(original)
    reused = step_cached(log, step)
    return {"tag": tag, "size": size_mb(tag), "cold": cold, "warm": warm, "reused": reused, "carries": carries(tag)}


def step_cached(log: str, step: str) -> bool:
    """Whether the build step whose title contains `step` shows as "#N CACHED" in a plain build log."""
    lines = log.splitlines()
    for line in lines:
        if line.startswith("#") and " [" in line and step in line:
            return f"{line.split()[0]} CACHED" in lines
    return False


def time_to_healthy(project: Path, env: str, runs: int = 3) -> float:
    script = project / "scripts" / "compose.sh"
    sh(script, env, "config", "--quiet", cwd=project)  # first-use setup outside the timing
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        sh(script, env, "up", "--detach", "--wait", cwd=project)
        times.append(time.perf_counter() - started)
        sh(script, env, "down", "--volumes", cwd=project)
    return statistics.median(times)


def alternating(runs: int, *builds) -> list[dict]:
    """Each build's cold_and_warm, `runs` times in turn (ours, baseline, ours, ...): medians of the
    times, the rest from the last run."""
    results = [[] for _ in builds]
    for _ in range(runs):
        for done, build_once in zip(results, builds):
            done.append(build_once())
    return [dict(done[-1], cold=statistics.median(r["cold"] for r in done), colds=[r["cold"] for r in done],
                 warm=statistics.median(r["warm"] for r in done)) for done in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold builds of each, alternating (default 5)")
    runs = parser.parse_args().runs
    images = {line.split("\t")[0]: line.split("\t")[1] for line in
              (ROOT / "tests/lab/.state/images.tsv").read_text().splitlines()[1:]}
    base = "python:3.12-slim-bookworm"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for app in ("example", "psycopg2-sdist"):
            project = render(Path(scratch) / app)
            args = {}
            apt = ""
            if app == "psycopg2-sdist":
                add_psycopg2(project)
                args = {"BUILD_PACKAGES": BUILD_PACKAGES, "RUNTIME_PACKAGES": RUNTIME_PACKAGES}
                apt = BASELINE_APT.format(packages=BUILD_PACKAGES)
            (project / "Dockerfile.baseline").write_text(BASELINE.format(apt=apt))
            ours, baseline = alternating(
                runs,
                lambda: cold_and_warm(project, f"{app}-ours", "Dockerfile", args, "install --require-hashes"),
                lambda: cold_and_warm(project, f"{app}-baseline", "Dockerfile.baseline", {}, "python -m pip install"))
            rows.append((app, ours, baseline))
        project = render(Path(scratch) / "healthy")
        sh(project / "scripts" / "compose.sh", "production", "build", cwd=project)
        healthy = {env: time_to_healthy(project, env) for env in ("dev", "production")}

    print(f"Machine: {platform.machine()}, {shutil.os.cpu_count()} cores; base image {base} "
          f"({images.get(base, 'unknown')}); {time.strftime('%Y-%m-%d')}; cold and warm: medians of {runs} "
          "alternating builds.\n")
    print("| app | image | size (MB) | vs baseline | cold build (s) | vs baseline | cold builds (s) | warm rebuild (s) | "
          "warm/cold | dependency layer reused | compiler, headers or caches in the image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for app, ours, baseline in rows:
        for label, result in (("rendered (multi-stage)", ours), ("baseline (docker init style)", baseline)):
            print(f"| {app} | {label} | {result['size']:.0f} | {result['size'] / baseline['size']:.2f}x | "
                  f"{result['cold']:.1f} | {result['cold'] / baseline['cold']:.2f}x | "
                  f"{' '.join(f'{c:.1f}' for c in result['colds'])} | {result['warm']:.1f} | "
                  f"{result['warm'] / result['cold']:.2f} | {'yes' if result['reused'] else 'no'} | {result['carries']} |")
    print("\n| stack (python, postgres, redis, nginx) | up to all healthy (s, median of 3) |")
    print("|---|---|")
    for env, seconds in healthy.items():
        print(f"| {env} | {seconds:.1f} |")
    print(json.dumps({"rows": [(a, o, b) for a, o, b in rows], "healthy": healthy}, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
