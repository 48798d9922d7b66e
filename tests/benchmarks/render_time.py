"""Render-time benchmark: each variant of the test matrix against a trivial one-file Copier
template rendered in the same run (the overhead ratio says what this template costs beyond Copier).

    python3 tests/benchmarks/render_time.py [--runs 7]

Prints a Markdown table for docs/performance.md. Both templates are rendered in-process from a
git checkout at HEAD, so Python start-up and the git clone Copier makes are in both figures.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from copier import run_copy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import VARIANTS  # noqa: E402


def trivial_template(where: Path) -> Path:
    """A one-question, one-file template in a git repository: Copier's own floor."""
    template = where / "trivial"
    (template / "template").mkdir(parents=True)
    (template / "copier.yml").write_text("_subdirectory: template\nname:\n  type: str\n  default: demo\n")
    (template / "template" / "README.md.jinja").write_text("# {{ name }}\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "t"]):
        subprocess.run(["git", *cmd], cwd=template, check=True)
    return template


def median_render(template: Path, data: dict, runs: int, scratch: Path) -> tuple[float, int]:
    """Median seconds of `runs` renders, and how many files one render writes."""
    times = []
    for i in range(runs):
        destination = scratch / f"out-{time.monotonic_ns()}-{i}"
        started = time.perf_counter()
        run_copy(str(template), str(destination), data=data, defaults=True, unsafe=True, vcs_ref="HEAD", quiet=True)
        times.append(time.perf_counter() - started)
    files = sum(1 for path in destination.rglob("*") if path.is_file())
    return statistics.median(times), files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        baseline, _ = median_render(trivial_template(scratch), {}, args.runs, scratch)
        print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
              f"runs per figure: {args.runs} (median)\n")
        print("| variant | files | render (s) | trivial template (s) | ratio |")
        print("|---|---|---|---|---|")
        for name, data in VARIANTS.items():
            seconds, files = median_render(ROOT, data, args.runs, scratch)
            print(f"| {name} | {files} | {seconds:.3f} | {baseline:.3f} | {seconds / baseline:.1f}x |")


if __name__ == "__main__":
    main()
