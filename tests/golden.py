"""Golden renders: a few rendered projects committed under tests/golden/<name>/, so that any change
to rendered output shows as a diff in review. tests/test_golden.py fails when a fresh render of
the working tree differs; after an intended change, update them and review the diff:

    python3 tests/golden.py            # rewrite tests/golden/ from the working tree
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"

# Small, different variants: the defaults, and two that differ in every choice they can.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "node-mariadb-caddy-blue-green": dict(
        project_name="Golden Node", runtime="node", environments=["production"], database="mariadb", cache="none",
        monitoring="prometheus-loki", alert_receiver="webhook", proxy="caddy", tls="acme", acme_email="ops@deployment-patterns.dev",
        domain_production="node.deployment-patterns.dev",
        deploy_strategy="blue-green", process_manager="supervisor", orchestrators=["swarm", "kubernetes"],
    ),
    "go-traefik-minimal": dict(
        project_name="Golden Go", runtime="go", environments=["dev", "production"], database="none", cache="none",
        monitoring="none", proxy="traefik", tls="none", process_manager="none",
    ),
}
# Not compared: Copier's own record (it names the template commit) and lock files (copied as they are).
IGNORED = {".copier-answers.yml", "requirements.txt", "package-lock.json", "uv.lock", "poetry.lock"}


def render(name: str, destination: Path) -> Path:
    from copier import run_copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the working tree is a dirty template: that is the point
        run_copy(str(ROOT), str(destination), data=VARIANTS[name], defaults=True, unsafe=True, quiet=True)
    for ignored in IGNORED:
        (destination / ignored).unlink(missing_ok=True)
    return destination


def differences(expected: Path, actual: Path) -> list[str]:
    """Relative paths of files that differ, exist on one side only, or differ in their executable
    bit. Files only: git keeps no empty directory (a render may hold one, e.g. deploy/)."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}

    left, right = files(expected), files(actual)
    found = sorted(left ^ right)
    for name in sorted(left & right):
        a, b = expected / name, actual / name
        if a.read_bytes() != b.read_bytes():
            found.append(name)
        elif (a.stat().st_mode & 0o111) != (b.stat().st_mode & 0o111):
            found.append(name + " (mode)")
    return sorted(found)


def update() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for name in VARIANTS:
            fresh = render(name, Path(scratch) / name)
            shutil.rmtree(GOLDEN / name, ignore_errors=True)
            shutil.copytree(fresh, GOLDEN / name)
            print(f"tests/golden/{name}: {sum(1 for p in fresh.rglob('*') if p.is_file())} files")


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit(__doc__)
    update()
