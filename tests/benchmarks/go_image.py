"""Go image benchmark: the Go example app's runtime image as this template renders it (a static
binary and busybox from scratch) against the image of an earlier template version (a static
binary on debian-slim), built in the same run from an empty build cache: size, cold build, and
the time from start to healthy. Also a single-stage baseline in the style of `docker init`
(the Go image, `go mod download`, `go build`, non-root; no health check), built cold in the
same run: the issue's measure of a cold build.

    python3 tests/benchmarks/go_image.py [--before COMMIT]   # needs tests/lab/prepare.sh first
    python3 tests/benchmarks/go_image.py --runtime node [--before COMMIT]

With --runtime node: the Node example's runtime image, now against the earlier version (size, cold
build, start to healthy), and against a single stage in the style of `docker init` (the Node image,
`npm ci --omit=dev` through a cache mount, non-root), the three built in turn `--runs` times
(default 3): medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
BEFORE = "39337a15dbafa3534bc6b205eff05f6dd21018e6"  # v0.3.0


def sh(*cmd: str, **kwargs) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout


def go_image(project: Path, runtime: str = "go") -> str:
    return next(line.split("=", 1)[1] for line in (project / "Dockerfile").read_text().splitlines()
                if line.startswith(f"ARG {runtime.upper()}_IMAGE="))


def alias_go_image(project: Path, runtime: str = "go") -> None:
    """An earlier commit pins an earlier base image; where this host lacks it (no registry), the
    lab's image of the current pin is tagged under that name, and the output says so."""
    wanted = go_image(project, runtime)
    if subprocess.run(["docker", "image", "inspect", wanted], capture_output=True).returncode == 0:
        return
    sys.path.insert(0, str(ROOT))
    from extensions.catalogue import IMAGES
    sh("docker", "tag", IMAGES[runtime], wanted)
    print(f"note: {wanted} is not on this host: tagged {IMAGES[runtime]} as it (the same stand-in)", file=sys.stderr)


def empty_build_cache() -> None:
    """Before a cold build: no build cache, and the previous build's writes on the disk before the
    clock starts, not during this build."""
    sh("docker", "builder", "prune", "--all", "--force")
    sh("sync")


def measure(ref: str | None, name: str, scratch: Path, runtime: str = "go") -> dict:
    project = scratch / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(ROOT), str(project), vcs_ref=ref, defaults=True, unsafe=True, quiet=True,
                 data={"project_name": f"Bench {runtime} {name}", "runtime": runtime, "database": "none", "cache": "none"})
    tag = f"bench-{runtime}-{name}:dev"
    alias_go_image(project, runtime)
    empty_build_cache()
    started = time.perf_counter()
    sh("docker", "build", "--quiet", "--target", "runtime", "--tag", tag, str(project))
    build = time.perf_counter() - started
    size = int(json.loads(sh("docker", "image", "inspect", tag))[0]["Size"])
    container = f"bench-{runtime}-{name}"
    sh("docker", "run", "-d", "--name", container, "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001", tag)
    started = time.perf_counter()
    try:
        while json.loads(sh("docker", "inspect", container))[0]["State"].get("Health", {}).get("Status") != "healthy":
            time.sleep(0.2)
            assert time.perf_counter() - started < 120, "not healthy within 2 minutes"
        healthy = time.perf_counter() - started
    finally:
        sh("docker", "rm", "--force", container)
        sh("docker", "image", "rm", "--force", tag)
    return {"size": size / 1e6, "build": build, "healthy": healthy}


BASELINES = {
    "go": """\
FROM {image}
WORKDIR /src
COPY go.mod go.sum* ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /usr/local/bin/app .
USER 10001:10001
CMD ["/usr/local/bin/app"]
""",
    "node": """\
FROM {image}
ENV NODE_ENV=production
WORKDIR /usr/src/app
RUN --mount=type=bind,source=package.json,target=package.json \\
    --mount=type=bind,source=package-lock.json,target=package-lock.json \\
    --mount=type=cache,target=/root/.npm \\
    npm ci --omit=dev
USER 10001:10001
COPY . .
CMD ["node", "server.js"]
""",
}


def baseline(scratch: Path, runtime: str = "go") -> dict:
    """The rendered example built by a single-stage Dockerfile (no health check: build and size only)."""
    project = scratch / "now"
    image = go_image(project, runtime)
    (project / "Dockerfile.baseline").write_text(BASELINES[runtime].format(image=image))
    tag = f"bench-{runtime}-baseline:dev"
    empty_build_cache()
    started = time.perf_counter()
    sh("docker", "build", "--quiet", "--file", str(project / "Dockerfile.baseline"), "--tag", tag, str(project))
    build = time.perf_counter() - started
    size = int(json.loads(sh("docker", "image", "inspect", tag))[0]["Size"])
    sh("docker", "image", "rm", "--force", tag)
    return {"size": size / 1e6, "build": build}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the template commit to compare with (default: v0.3.0)")
    parser.add_argument("--runtime", default="go", choices=["go", "node"])
    parser.add_argument("--runs", type=int, default=3, help="with --runtime node: ours and the single stage, alternately")
    args = parser.parse_args()
    if args.runtime != "go":
        with tempfile.TemporaryDirectory() as scratch:
            befores, nows, singles = [], [], []
            for _ in range(args.runs):
                befores.append(measure(args.before, "before", Path(scratch), args.runtime))
                nows.append(measure(None, "now", Path(scratch), args.runtime))
                singles.append(baseline(Path(scratch), args.runtime))
        before = {key: statistics.median(m[key] for m in befores) for key in befores[0]}
        now = {key: statistics.median(m[key] for m in nows) for key in nows[0]}
        single = {key: statistics.median(m[key] for m in singles) for key in singles[0]}
        print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; {args.runtime} image: the catalogue pin "
              f"(STAND-IN where no registry answers); {time.strftime('%Y-%m-%d')}; each figure "
              f"the median of {args.runs}, the three built in turn.\n")
        print("| image | size (MB) | vs before | cold build (s) | vs before | start to healthy (s) | cold builds (s) |")
        print("|---|---|---|---|---|---|---|")
        for label, m, runs in ((f"before ({args.before[:7]})", before, befores), ("now", now, nows),
                               ("single stage (docker init style)", single, singles)):
            healthy = f"{m['healthy']:.1f}" if "healthy" in m else "-"
            builds = " ".join(f"{r['build']:.1f}" for r in runs)
            print(f"| {label} | {m['size']:.1f} | {m['size'] / before['size']:.2f}x | {m['build']:.1f} | "
                  f"{m['build'] / before['build']:.2f}x | {healthy} | {builds} |")
        print(f"\nNow against the single stage: size {now['size'] / single['size']:.2f}x, cold build {now['build'] / single['build']:.2f}x.")
        return
    with tempfile.TemporaryDirectory() as scratch:
        before = measure(args.before, "before", Path(scratch))
        now = measure(None, "now", Path(scratch))
        single = baseline(Path(scratch))
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; Go image: the catalogue pin (STAND-IN where no "
          f"registry answers); {time.strftime('%Y-%m-%d')}.\n")
    print("| image | size (MB) | vs before | cold build (s) | vs before | start to healthy (s) |")
    print("|---|---|---|---|---|---|")
    for label, m in ((f"before ({args.before[:7]})", before), ("now (scratch: static binary, busybox)", now)):
        print(f"| {label} | {m['size']:.1f} | {m['size'] / before['size']:.2f}x | {m['build']:.1f} | "
              f"{m['build'] / before['build']:.2f}x | {m['healthy']:.1f} |")
    print(f"| single stage (docker init style, golang image) | {single['size']:.1f} | {single['size'] / before['size']:.2f}x | "
          f"{single['build']:.1f} | {single['build'] / before['build']:.2f}x | - |")
    print(f"\nNow against the single stage: size {now['size'] / single['size']:.2f}x, cold build {now['build'] / single['build']:.2f}x.")


if __name__ == "__main__":
    main()
