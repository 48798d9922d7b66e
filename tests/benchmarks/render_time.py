"""Render-time benchmark: each variant of the test matrix against a trivial one-file Copier
template rendered in the same run (the overhead ratio says what this template costs beyond Copier).

    python3 tests/benchmarks/render_time.py [--runs 7]
    python3 tests/benchmarks/render_time.py --cli [--runs 9] [--before COMMIT]

Prints a Markdown table for docs/performance.md. Both templates are rendered in-process from a
git checkout at HEAD, so the git clone Copier makes is in both figures. With --cli, what a user
runs: `copier copy --defaults` in a new process (Python's start-up and Copier's import included),
this template and the trivial one alternately, this template twice: as a later render (the
compiled templates in Jinja's cache from earlier runs) and as a first render (an empty cache: a new
TMPDIR each time); with --before, also the template at COMMIT (a worktree), in the same rounds.
With --parts: where a later render's time goes, in new processes: Copier's import alone, the whole
render, and the render with Copier's per-file `git` calls patched out.
"""

from __future__ import annotations

import argparse
import os
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


def cli_render(template: Path, scratch: Path, first: bool = False) -> float:
    """Seconds of one `copier copy --defaults` of `template` in a new process; `first`: with a
    temporary directory of its own, so no compiled template from an earlier run is there."""
    destination = scratch / f"cli-{time.monotonic_ns()}"
    env = dict(os.environ)
    if first:
        env["TMPDIR"] = tempfile.mkdtemp(dir=scratch)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--trust", "--vcs-ref", "HEAD",
                    str(template), str(destination)], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def cli_main(runs: int, before: str | None) -> None:
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        templates = {"trivial one-file template": (trivial_template(scratch), False),
                     "this template (HEAD), a later render": (ROOT, False),
                     "this template (HEAD), a first render": (ROOT, True)}
        if before:
            worktree = scratch / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), before], check=True)
            templates[f"this template ({before})"] = (worktree, False)
        times: dict[str, list[float]] = {name: [] for name in templates}
        try:
            for name, (template, first) in templates.items():
                cli_render(template, scratch, first)  # warm the page cache; not counted
            for _ in range(runs):
                for name, (template, first) in templates.items():
                    times[name].append(cli_render(template, scratch, first))
        finally:
            if before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
        baseline = statistics.median(times["trivial one-file template"])
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
              f"{platform.python_version()}; `copier copy --defaults` in a new process, {runs} rounds (median)\n")
        print("| template | median (s) | ratio to the trivial template | each run (s) |")
        print("|---|---|---|---|")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.2f} | {median / baseline:.2f}x | {' '.join(f'{v:.2f}' for v in values)} |")


# Python run in a new process: `copier copy --defaults` of the template, after PATCH.
PARTS = {
    "Copier's import alone": "import copier._cli\nraise SystemExit(0)",
    "the whole render": "",
    "without Copier's per-file git calls": "import copier._main\ncopier._main.Worker._sync_git_index_executable_bit = lambda *args: None",
}


def parts_main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as scratch_dir:
        def one(patch: str) -> float:
            argv = ["copier", "copy", "--defaults", "--quiet", "--trust", "--vcs-ref", "HEAD", str(ROOT),
                    f"{scratch_dir}/parts-{time.monotonic_ns()}"]
            code = f"import sys\nsys.argv = {argv!r}\n{patch}\nfrom copier._cli import CopierApp\nCopierApp.run()"
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            return time.perf_counter() - started

        times: dict[str, list[float]] = {name: [] for name in PARTS}
        for patch in PARTS.values():
            one(patch)  # fills the compile cache and the page cache; not counted
        for _ in range(runs):
            for name, patch in PARTS.items():
                times[name].append(one(patch))
        print("| part | median (s) | each run (s) |")
        print("|---|---|---|")
        for name, values in times.items():
            print(f"| {name} | {statistics.median(values):.2f} | {' '.join(f'{v:.2f}' for v in values)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cli", action="store_true", help="through the CLI, in a new process per render")
    parser.add_argument("--before", help="with --cli: also the template at this commit")
    parser.add_argument("--parts", action="store_true", help="where a later render's time goes")
    args = parser.parse_args()
    if args.parts:
        parts_main(args.runs)
        return
    if args.cli:
        cli_main(args.runs, args.before)
        return
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
