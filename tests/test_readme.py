"""The README's two commands, run as written (the guide's promise to a newcomer): the render
command in a copy of this checkout, then `copier update` inside the project it made; the test
command is the one CI runs (it cannot run itself from inside the suite)."""

from __future__ import annotations

import re
import shutil
import subprocess

from conftest import ROOT, run

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def the_two_commands() -> tuple[str, str]:
    section = (ROOT / "README.md").read_text().split("## The two commands", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    return commands[0], commands[1]


def test_the_render_command_makes_an_updatable_project(tmp_path):
    render, _ = the_two_commands()
    checkout = tmp_path / "checkout"
    # This checkout as it is, uncommitted changes committed in the copy: a dirty template makes
    # Copier record a temporary commit that an update could not find (CI's clone is clean).
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns("__pycache__", ".state", "golden"))
    subprocess.run([*GIT, "add", "-A"], cwd=checkout, check=True)
    subprocess.run([*GIT, "commit", "-qm", "work in progress", "--allow-empty"], cwd=checkout, check=True)
    proc = subprocess.run(["bash", "-c", render], cwd=checkout, text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    project = tmp_path / "my-service"
    assert (project / "compose.yaml").is_file() and (project / ".copier-answers.yml").is_file()
    run(project / "scripts" / "compose.sh", "dev", "config", "--quiet", cwd=project)
    # `copier update` from inside the project finds the template it was made from.
    subprocess.run([*GIT, "init", "-q"], cwd=project, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", "rendered"], cwd=project, check=True)
    update = subprocess.run(["copier", "update", "--trust", "--defaults", "--vcs-ref=HEAD"], cwd=project, text=True,
                            capture_output=True, timeout=600)
    assert update.returncode == 0, update.stderr[-3000:]


def test_the_test_command_is_what_ci_runs():
    _, test = the_two_commands()
    assert test == "bash tests/run.sh"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^exec {re.escape(test)}$", ci, re.M), "CI must run the README's test command as written"
