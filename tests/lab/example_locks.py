"""Lock files of the example apps, one set per database and cache choice, so that a render
carries only the drivers it uses (a Node app without a database has no pg or mysql2):

    template/_includes/locks/<database>-<cache>/requirements.txt   pip, with hashes (uv pip compile)
                                               /uv.lock            uv
                                               /poetry.lock        Poetry
                                               /Pipfile            Pipenv (the example's, with its lock:
                                               /Pipfile.lock        the lock's hash is Pipfile's)
                                               /package-lock.json  npm

The direct dependencies come from extensions/catalogue.py (EXAMPLE_DEPENDENCIES); the templates
include the set that matches the answers. Re-run after changing them, or to take newer releases:

    python3 tests/lab/example_locks.py     # needs uv, poetry (the pins in catalogue.TOOLS), npm, Docker (Pipenv
                                           # locks in the example's base image), and the registries
    python3 tests/lab/example_locks.py --only pipenv     # one package manager's files only
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from packaging.requirements import Requirement  # noqa: E402

from extensions.catalogue import DATABASES, IMAGES, TOOLS, example_dependencies, example_lock_key  # noqa: E402

LOCKS = ROOT / "template" / "_includes" / "locks"
PLACEHOLDER = "dp-example-project"  # the project's name in a lock, replaced by {{ project_slug }}
PYTHON = ">=3.11"


def run(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)


def pyproject(dependencies: list[str], poetry: bool) -> str:
    lines = ["[project]", f'name = "{PLACEHOLDER}"', 'version = "0.1.0"', f'requires-python = "{PYTHON}"', "dependencies = ["]
    lines += [f'    "{d}",' for d in dependencies] + ["]"]
    if poetry:
        lines += ["", "[tool.poetry]", "package-mode = false"]
    return "\n".join(lines) + "\n"


# Poetry reads PyPI through its JSON API, which some mirrors (this lab's) do not serve: it locks
# through PyPI's simple index declared as a source, then the source is taken out of the lock and
# the content hash recomputed by Poetry itself for the pyproject a rendered project has.
SIMPLE_INDEX = '\n[[tool.poetry.source]]\nname = "pypi-simple"\nurl = "https://pypi.org/simple/"\npriority = "primary"\n'
CONTENT_HASH = "from poetry.factory import Factory; print(Factory().create_poetry('.').locker._get_content_hash())"


def poetry_lock(dependencies: list[str], work: Path) -> str:
    work.mkdir()
    project = work / "pyproject.toml"
    project.write_text(pyproject(dependencies, poetry=True) + SIMPLE_INDEX)
    run("poetry", "lock", cwd=work)
    text = re.sub(r'\n\[package\.source\]\ntype = "legacy"\nurl = "[^"]+"\nreference = "pypi-simple"\n', "\n", (work / "poetry.lock").read_text())
    project.write_text(pyproject(dependencies, poetry=True))
    poetry_python = Path(shutil.which("poetry")).resolve().parent / "python"
    digest = subprocess.run([str(poetry_python), "-c", CONTENT_HASH], cwd=work, check=True, capture_output=True, text=True).stdout.strip()
    text, count = re.subn(r'content-hash = "[0-9a-f]+"', f'content-hash = "{digest}"', text)
    assert count == 1 and "pypi-simple" not in text
    return text


def pipfile(dependencies: list[str]) -> str:
    """A Pipfile of these requirements (name[extras]>=version), from PyPI's simple index."""
    lines = ["[[source]]", 'url = "https://pypi.org/simple"', "verify_ssl = true", 'name = "pypi"', "", "[packages]"]
    for requirement in map(Requirement, dependencies):
        version = f'"{requirement.specifier or "*"}"'
        if requirement.extras:
            extras = ", ".join(f'"{extra}"' for extra in sorted(requirement.extras))
            version = f"{{version = {version}, extras = [{extras}]}}"
        lines.append(f"{requirement.name} = {version}")
    return "\n".join(lines) + "\n"


def pipenv_lock(pipfile_path: Path, work: Path) -> str:
    """Pipfile.lock of that Pipfile (its _meta.hash is the Pipfile's: pipenv verify checks it).
    Pipenv locks what the Python that runs it needs (a dependency behind a marker such as
    python_full_version < "3.11.3" is left out on a newer one): locked by the image's Python, in a
    container of the example's base image."""
    work.mkdir()
    shutil.copy(pipfile_path, work / "Pipfile")
    script = f'pip install --quiet --root-user-action=ignore "pipenv=={TOOLS["pipenv"]}" && PIPENV_IGNORE_VIRTUALENVS=1 pipenv lock'
    run("docker", "run", "--rm", "--volume", f"{work}:/work", "--workdir", "/work", IMAGES["python"], "sh", "-c", script, cwd=work)
    return (work / "Pipfile.lock").read_text()


def lock(database: str, cache: str, scratch: Path, only: str | None) -> None:
    out = LOCKS / example_lock_key(database, cache)
    out.mkdir(parents=True, exist_ok=True)
    python = example_dependencies("python", database, cache)

    if only == "pipenv" or only is None:
        (out / "Pipfile").write_text(pipfile(python))
        (out / "Pipfile.lock").write_text(pipenv_lock(out / "Pipfile", scratch / "pipenv"))
    if only is not None:
        print(f"template/_includes/locks/{out.name}: {only}")
        return

    pip = scratch / "pip"
    pip.mkdir()
    (pip / "requirements.in").write_text("\n".join(python) + "\n")
    run("uv", "pip", "compile", "--universal", "--python-version", "3.11", "--generate-hashes", "requirements.in",
        "-o", "requirements.txt", cwd=pip)
    shutil.copy(pip / "requirements.txt", out / "requirements.txt")

    uv = scratch / "uv"
    uv.mkdir()
    (uv / "pyproject.toml").write_text(pyproject(python, poetry=False))
    run("uv", "lock", cwd=uv)
    (out / "uv.lock").write_text((uv / "uv.lock").read_text().replace(f'"{PLACEHOLDER}"', '"{{ project_slug }}"'))

    (out / "poetry.lock").write_text(poetry_lock(python, scratch / "poetry"))

    npm = scratch / "npm"
    npm.mkdir()
    package = {"name": PLACEHOLDER, "version": "0.1.0", "private": True,
               "dependencies": example_dependencies("node", database, cache)}
    (npm / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    run("npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund", cwd=npm)
    (out / "package-lock.json").write_text((npm / "package-lock.json").read_text().replace(f'"{PLACEHOLDER}"', '"{{ project_slug }}"'))
    print(f"template/_includes/locks/{out.name}: {', '.join(sorted(p.name for p in out.iterdir()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["pipenv"], help="make this package manager's files only")
    only = parser.parse_args().only
    for database in [*DATABASES, "none"]:
        for cache in ("redis", "none"):
            with tempfile.TemporaryDirectory() as scratch:
                lock(database, cache, Path(scratch), only)


if __name__ == "__main__":
    main()
