"""scripts/sbom.sh on a built image of each runtime: a CycloneDX 1.5 document that the CycloneDX
schema accepts (cyclonedx-python-lib's strict validator), listing every dependency the example
app pins in its lock file, at the pinned version, with its package URL."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from conftest import run
from extensions.catalogue import IMAGES

GO_TAG = IMAGES["go"].split(":", 1)[1]

pytestmark = pytest.mark.e2e

RUNTIMES = {
    "python": dict(runtime="python", python_installer="pip"),
    "node": dict(runtime="node"),
    "go": dict(runtime="go"),
}


def pinned(project, runtime: str) -> set[str]:
    """The lock file's pins of the example app, as package URLs."""
    if runtime == "python":
        text = (project / "requirements.txt").read_text()
        pins = set()
        for name, version, marker in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)\s*(?:;([^\\\n]*))?", text, re.MULTILINE):
            if "win32" in marker or "pypy" in marker and "!=" not in marker:
                continue  # not installed on Linux/CPython
            if "python_full_version <" in marker:
                continue  # depends on the image's Python; the listed ones are checked when present
            pins.add(f"pkg:pypi/{re.sub(r'[-_.]+', '-', name).lower()}@{version}")
        return pins
    if runtime == "node":
        lock = json.loads((project / "package-lock.json").read_text())
        return {f"pkg:npm/{path.rsplit('node_modules/', 1)[1].replace('@', '%40', 1)}@{pkg['version']}"
                for path, pkg in lock["packages"].items() if path and not pkg.get("dev")}
    requires = re.findall(r"^\s*([a-z0-9./-]+)\s+(v\S+)", (project / "go.mod").read_text(), re.MULTILINE)
    # The example has no module dependency: the standard library it was compiled with is listed.
    go = run("docker", "run", "--rm", "--entrypoint", "go", "golang:" + GO_TAG, "version").stdout.split()[2]
    return {f"pkg:golang/{module}@{version}" for module, version in requires} | {f"pkg:golang/stdlib@v{go[2:]}"}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sbom_lists_the_pinned_dependencies_as_valid_cyclonedx(copie_session, lab, runtime):
    answers = dict(project_name=f"Sbom {runtime}", environments=["dev"], database="postgres", cache="redis",
                   monitoring="none", proxy="nginx", tls="none", process_manager="none", ci="none", **RUNTIMES[runtime])
    result = copie_session.copy(extra_answers=answers)
    assert result.exit_code == 0, result.exception
    project = result.project_dir
    version = f"1.0.0-{uuid.uuid4().hex[:8]}"  # a release is never rebuilt: a new one per run
    run(project / "scripts/build.sh", "dev", version, cwd=project, timeout=900)
    try:
        check_document(project, runtime, version, run(project / "scripts/sbom.sh", version, cwd=project, timeout=300))
    finally:
        run("docker", "image", "rm", f"sbom-{runtime}:{version}", check=False)


def check_document(project, runtime: str, version: str, proc) -> None:
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(proc.stdout)
    assert errors is None, errors
    document = json.loads(proc.stdout)
    assert document["metadata"]["component"] == {"type": "application", "bom-ref": f"sbom-{runtime}@{version}",
                                                 "name": f"sbom-{runtime}", "version": version}
    listed = {component["purl"] for component in document["components"]}
    expected = pinned(project, runtime)
    assert expected and expected <= listed, sorted(expected - listed)
    assert f"{len(document['components'])} packages of sbom-{runtime}:{version}" in proc.stderr
    refused = run(project / "scripts/sbom.sh", "9.9.9", cwd=project, check=False)
    assert refused.returncode != 0 and "image sbom-" + runtime + ":9.9.9 is not on this host: build it first" in refused.stderr
