"""`copier update` is a promise: projects rendered by every release update to HEAD keeping the
user's edits, receiving the template's changes, showing conflicts as Copier documents, and still
passing the static checks; changing answers through an update equals a fresh copy."""

from __future__ import annotations

import filecmp
import fnmatch
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from copier import run_copy, run_update

from conftest import ROOT, require_tool, run

# Releases with their commit, from CHANGELOG.md (tags may be missing from a clone; commits are not).
def _releases() -> list[tuple[str, str]]:
    """(version, commit) of every released version whose commit the changelog records, newest first."""
    found = []
    for section in (ROOT / "CHANGELOG.md").read_text().split("\n## ")[1:]:
        version = re.match(r"v\d+\.\d+\.\d+", section)
        commit = re.search(r"^Release commit: `([0-9a-f]{40})`", section, re.M)
        if version and commit:
            found.append((version.group(0), commit.group(1)))
    return found


RELEASES = _releases()
# The app's own files (copier.yml `_skip_if_exists`): rendered once, never replaced by an update.
USER_OWNED = yaml.safe_load((ROOT / "copier.yml").read_text())["_skip_if_exists"]


def user_owned(relative: Path | str) -> bool:
    return any(fnmatch.fnmatch(str(relative), pattern) for pattern in USER_OWNED)
ANSWERS = {"project_name": "Update Test"}
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def git(project: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=project, check=True, text=True, capture_output=True).stdout


def render(ref: str, destination: Path, data: dict) -> Path:
    run_copy(str(ROOT), str(destination), vcs_ref=ref, data=data, defaults=True, unsafe=True, quiet=True)
    return destination


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)


def start_repository(project: Path) -> None:
    git(project, "init", "-q")
    commit_all(project, "rendered")


def update(project: Path, conflict: str = "inline", data: dict | None = None) -> None:
    run_update(str(project), vcs_ref="HEAD", defaults=True, overwrite=True, unsafe=True, quiet=True,
               conflict=conflict, data=data or {})


def conflicted(project: Path) -> list[str]:
    return sorted(str(p.relative_to(project)) for p in project.rglob("*")
                  if p.is_file() and ".git" not in p.parts and "<<<<<<< " in p.read_text(errors="ignore"))


@pytest.fixture(scope="session")
def passed_shellcheck(tmp_path_factory) -> Path:
    """Where a shellcheck run that passed is noted, by everything it read: the release updates end
    in the same scripts (each is compared with HEAD's render), about 25 s of CPU each. Shared by
    the session's xdist workers (their directories' parent)."""
    base = tmp_path_factory.getbasetemp()
    memo = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shellcheck-passed"
    memo.mkdir(exist_ok=True)
    return memo


def shellcheck(project: Path, memo: Path) -> None:
    """shellcheck -x on the project's scripts, unless the same scripts (every shell file it may
    source, and its settings) passed the same shellcheck already."""
    tool = require_tool("shellcheck")
    scripts = sorted(str(p.relative_to(project)) for p in project.glob("scripts/**/*.sh")) + ["docker/entrypoint.sh"]
    digest = hashlib.sha256(run(tool, "--version").stdout.encode())
    for path in sorted([*project.rglob("*.sh"), *project.glob(".shellcheckrc")]):
        if ".git" not in path.parts:
            digest.update(f"\0{path.relative_to(project)}\0".encode() + path.read_bytes())
    passed = memo / digest.hexdigest()
    if not passed.exists():
        run(tool, "-x", *scripts, cwd=project)
        passed.touch()


def static_checks(project: Path, memo: Path) -> None:
    """The rendered project's own checkers, as in tests/test_static_checks.py."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    run(require_tool("hadolint"), "--failure-threshold", "style", "Dockerfile", cwd=project)
    shellcheck(project, memo)
    run(require_tool("yamllint"), "--strict", ".", cwd=project)
    for env in answers["environments"]:
        run(project / "scripts" / "compose.sh", env, "config", "--quiet", cwd=project)


def test_releases_are_listed_and_tagged_where_tags_exist():
    assert RELEASES and RELEASES[-1][0] == "v0.1.0", "the first release stays in the changelog"
    tags = subprocess.run(["git", "tag", "--list", "v*"], cwd=ROOT, text=True, capture_output=True).stdout.split()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for tag in tags:
        assert f"## {tag} " in changelog, f"{tag} has no CHANGELOG entry"
    for version, commit in RELEASES:
        if version in tags:
            tagged = subprocess.run(["git", "rev-parse", f"{version}^{{commit}}"], cwd=ROOT, text=True,
                                    capture_output=True, check=True).stdout.strip()
            assert tagged == commit, f"{version} is tagged at {tagged}, the changelog says {commit}"


@pytest.mark.parametrize("version, commit", RELEASES, ids=[v for v, _ in RELEASES])
def test_question_names_survive_or_are_migrated(version, commit):
    """A question of an older release exists now, or a `_migrations` entry deals with it."""
    old = yaml.safe_load(subprocess.run(["git", "show", f"{commit}:copier.yml"], cwd=ROOT, text=True,
                                        capture_output=True, check=True).stdout)
    new = yaml.safe_load((ROOT / "copier.yml").read_text())
    migrations = yaml.safe_dump(new.get("_migrations", []))
    for question in (key for key in old if not key.startswith("_")):
        assert question in new or question in migrations, f"{question} (from {version}) vanished without a migration"


@pytest.mark.parametrize("version, commit", RELEASES, ids=[v for v, _ in RELEASES])
def test_update_from_release_keeps_edits_and_brings_changes(version, commit, tmp_path, passed_shellcheck):
    project = render(commit, tmp_path / "project", ANSWERS)
    start_repository(project)
    # What a user does in the first weeks: settings and secrets, and typical edits.
    run(project / "scripts" / "init-env.sh", "production")
    settings = {p: p.read_bytes() for p in [project / "env/production.env", *(project / "secrets/production").iterdir()]}
    limits = project / "compose.production.yaml"
    limits.write_text(limits.read_text().replace("memory: 128M", "memory: 192M", 1))  # the proxy's limit
    compose_sh = project / "scripts" / "compose.sh"
    compose_sh.write_text(compose_sh.read_text().replace('exec "${COMPOSE[@]}" "$@"', 'export COMPOSE_PARALLEL_LIMIT=4\nexec "${COMPOSE[@]}" "$@"'))
    extra = project / "compose.worker.yaml"  # a service of their own, next to the template's files
    extra.write_text("services:\n  worker:\n    image: busybox:1.36\n    command: [sleep, infinity]\n")
    app = project / "app" / "main.py"
    app.write_text(app.read_text() + "\n# our own change to the app\n")
    owned = app.read_bytes()
    commit_all(project, "local edits")
    owned_before = {p.relative_to(project): p.read_bytes() for p in project.rglob("*")
                    if p.is_file() and ".git" not in p.parts and user_owned(p.relative_to(project))}

    update(project)

    assert conflicted(project) == [], "these edits do not overlap the template's changes"
    assert "memory: 192M" in limits.read_text()
    assert "export COMPOSE_PARALLEL_LIMIT=4" in compose_sh.read_text()
    assert extra.exists()
    assert app.read_bytes() == owned, "app code is the user's: never overwritten by an update"
    assert {p: p.read_bytes() for p in settings} == settings, "env files and secrets are never touched"
    # The template's changes arrived: every file the user did not edit equals a fresh render of HEAD.
    fresh = render("HEAD", tmp_path / "fresh", ANSWERS)
    for path in fresh.rglob("*"):
        relative = path.relative_to(fresh)
        if path.is_dir() or relative.parts[0] == ".copier-answers.yml":
            continue
        if relative in {Path("compose.production.yaml"), Path("scripts/compose.sh"), Path("app/main.py")}:
            continue
        if user_owned(relative) and relative in owned_before:
            assert (project / relative).read_bytes() == owned_before[relative], f"{relative} is the app's: kept as it was"
            continue
        assert (project / relative).exists(), f"{relative} did not arrive"
        assert filecmp.cmp(path, project / relative, shallow=False), f"{relative} differs from HEAD's"
    static_checks(project, passed_shellcheck)


def test_overlapping_edit_is_shown_as_a_conflict(tmp_path):
    """An edit on a line the template changed since v0.1.0 shows both sides: inline markers, or
    a .rej file with conflict="rej" (Copier's two documented modes)."""
    commit = dict(RELEASES)["v0.1.0"]
    for mode in ("inline", "rej"):
        project = render(commit, tmp_path / mode, ANSWERS)
        start_repository(project)
        dockerfile = project / "Dockerfile"
        assert "HEALTHCHECK --interval=10s" in dockerfile.read_text()  # 5s since v0.2.0
        dockerfile.write_text(dockerfile.read_text().replace("HEALTHCHECK --interval=10s", "HEALTHCHECK --interval=30s"))
        commit_all(project, "slower health checks")
        update(project, conflict=mode)
        if mode == "inline":
            assert conflicted(project) == ["Dockerfile"]
            text = dockerfile.read_text()
            assert "--interval=30s" in text and "--interval=5s" in text
        else:
            # The template's new line is applied; the user's rejected hunk waits in Dockerfile.rej.
            assert conflicted(project) == []
            assert "--interval=5s" in dockerfile.read_text()
            assert "+HEALTHCHECK --interval=30s" in (project / "Dockerfile.rej").read_text()


def test_changing_answers_in_an_update_equals_a_fresh_copy(tmp_path, passed_shellcheck):
    before = {**ANSWERS, "environments": ["dev", "production"], "monitoring": "none"}
    after = {"environments": ["dev", "staging", "production"], "monitoring": "prometheus"}
    # From the newest release: the update brings the template's changes and the new answers at once.
    project = render(RELEASES[0][1], tmp_path / "project", before)
    start_repository(project)
    compose_sh = project / "scripts" / "compose.sh"
    compose_sh.write_text(compose_sh.read_text() + "# our note\n")
    commit_all(project, "local edit")

    update(project, data=after)

    fresh = render("HEAD", tmp_path / "fresh", {**before, **after})
    comparison = filecmp.dircmp(project, fresh, ignore=[".git"])
    # The answers file may differ in _commit only (compared below); everything else is identical.
    differing = {path for path in _differences(comparison) - {".copier-answers.yml"} if not user_owned(path)}
    assert differing == {"scripts/compose.sh"}, differing
    assert compose_sh.read_text() == (fresh / "scripts/compose.sh").read_text() + "# our note\n"
    project_answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    fresh_answers = yaml.safe_load((fresh / ".copier-answers.yml").read_text())
    assert {k: v for k, v in project_answers.items() if k != "_commit"} == {k: v for k, v in fresh_answers.items() if k != "_commit"}
    static_checks(project, passed_shellcheck)


def _differences(comparison: filecmp.dircmp, prefix: str = "") -> set[str]:
    found = {prefix + name for name in comparison.diff_files + comparison.left_only + comparison.right_only}
    for name, sub in comparison.subdirs.items():
        found |= _differences(sub, f"{prefix}{name}/")
    return found
