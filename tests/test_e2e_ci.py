"""The rendered pipeline's stages, run here as a CI runner would: scripts/ci/install-tools.sh and
lint.sh, then test.sh (build, stack up, a request through the proxy, the compliance audit, a
backup round trip, stack removed). Each stage passes on the rendered project and fails on a
planted defect: a Dockerfile whose last USER is root, an app whose health check answers 500.
The release, scan, sign and deploy stages need a registry, Trivy's database and an OIDC
identity: their scripts' refusals are tested in tests/test_scripts.py, the gate's verdicts on
recorded Trivy reports too."""

from __future__ import annotations

import pytest

from conftest import run
from e2e_support import Stack

pytestmark = pytest.mark.e2e

ANSWERS = dict(project_name="Pipeline e2e", ci="github", environments=["dev", "staging"], database="postgres",
               cache="none", monitoring="none", proxy="nginx", tls="files", process_manager="none", app_replicas=1)


@pytest.fixture(scope="module")
def project(copie_session, lab):
    result = copie_session.copy(extra_answers=ANSWERS)
    assert result.exit_code == 0, result.exception
    run(result.project_dir / "scripts/ci/install-tools.sh", cwd=result.project_dir, timeout=300)
    return result.project_dir


def stage(project, name: str, *args: str):
    return run(project / "scripts" / "ci" / f"{name}.sh", *args, cwd=project, check=False, timeout=900)


def stage_with_defect(project, name: str, path: str, change) -> object:
    """The stage run once with `change(text)` planted in the project's file `path`, then undone."""
    planted = project / path
    original = planted.read_text()
    changed = change(original)
    assert changed != original, f"the defect was not planted in {path}"
    planted.write_text(changed)
    try:
        return stage(project, name)
    finally:
        planted.write_text(original)


def test_lint_stage_passes_and_a_root_user_fails_it(project):
    passed = stage(project, "lint")
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-3000:]
    assert "every check passed" in passed.stderr
    failed = stage_with_defect(project, "lint", "Dockerfile", lambda text: text + "USER root\n")
    assert failed.returncode != 0
    assert "DL3002" in failed.stdout + failed.stderr and "failed: hadolint Dockerfile" in failed.stderr


def test_test_stage_passes_and_a_failing_health_check_fails_it(project):
    stack = Stack(project, "staging")
    passed = stage(project, "test")
    assert passed.returncode == 0, passed.stderr[-4000:]
    assert "staging passed (health through the proxy, audit, backup round trip)" in passed.stderr
    assert "verified" in passed.stderr
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
    failed = stage_with_defect(project, "test", "app/main.py", lambda text: text.replace(
        'return "health", "200 OK"', 'return "health", "500 Internal Server Error"'))
    assert failed.returncode != 0
    assert "failed: the staging stack did not become healthy" in failed.stderr, failed.stderr[-3000:]
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
