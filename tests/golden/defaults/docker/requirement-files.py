"""What pip needs to install a project's requirements, apart from the rest of its source (run by
the Dockerfile's `requirements` stage).

    python requirement-files.py SOURCE OUT

Writes to OUT, with SOURCE's layout, what the image's dependency layer is then keyed on:
- requirements.txt, and every file it names with -r/--requirement or -c/--constraint (relative to
  the naming file, as pip reads them);
- the local paths these files install (".", "-e .", "./libs/x", "-e file:."), copied whole, and
  listed in OUT/.local-requirements.txt without "-e" (installed after the other lines, not
  editable: the image has no checkout to edit); their lines are commented out of the copies;
- the local directories of --find-links (-f ./wheels: wheels kept in the project), copied whole;
- OUT/.requirements-hashed when a file has hashes (pip-compile --generate-hashes).
A project without local paths changes OUT only when a requirement file or a -f directory changes.

Exits 1 with a one-line reason when a named file or path is missing or outside SOURCE.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

INCLUDE = re.compile(r"^(?:-[rc]\s*|--(?:requirement|constraint)(?:\s*=\s*|\s+))(\S+)$")
FIND_LINKS = re.compile(r"^(?:-f\s*|--find-links(?:\s*=\s*|\s+))(\S+)$")
EDITABLE = re.compile(r"^(?:-e|--editable)(?:\s*=\s*|\s+)(\S.*)$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
EXTRAS = re.compile(r"\[[^\]]*\]$")


def fail(reason: str) -> None:
    print(f"error: {reason}", file=sys.stderr)
    sys.exit(1)


def logical_lines(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, the line without its comment, its physical lines), backslash
    continuations joined, as pip reads them."""
    def uncommented(parts: list[str]) -> str:
        return re.sub(r"(^|\s)#.*$", "", " ".join(parts)).strip()

    result, parts, physical, start = [], [], [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        physical.append(line)
        parts.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            result.append((start, uncommented(parts), physical))
            parts, physical = [], []
    if parts:
        result.append((start, uncommented(parts), physical))
    return result


def local_path(line: str) -> str | None:
    """The path a requirement line installs from the source tree, if it does."""
    editable = EDITABLE.match(line)
    target = editable.group(1).strip() if editable else line
    if target.startswith("file:") and not target.startswith("file://"):
        return target.removeprefix("file:")  # relative, as pip-compile writes "-e file:."
    return target if target.startswith((".", "/", "file://")) else None


class Project:
    def __init__(self, source: Path):
        self.root = source.resolve()

    def inside(self, path: Path, written: str, where: str) -> Path:
        """PATH relative to the project; a one-line refusal when it is outside or missing."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            fail(f"{where} names {written}, outside the project: the image is built from this directory only")
        if not resolved.exists():
            fail(f"{where} names {written}, which is not in the build context (check .dockerignore)")
        # As named, not where a symbolic link leads: pip opens it by that name.
        return Path(os.path.normpath(path)).relative_to(self.root)

    def collect(self) -> tuple[dict[Path, list[str]], list[tuple[str, Path]], list[Path]]:
        """The requirement files (relative path: lines to write), the local paths (as pip is to
        read them, relative path to copy) and the local directories of --find-links (to copy)."""
        if not (self.root / "requirements.txt").is_file():
            # The other lock files pip cannot read, each with the command that exports them.
            exports = {"Pipfile.lock": "or choose python_installer pipenv",
                       "pdm.lock": "pdm export -o requirements.txt", "uv.lock": "or choose python_installer uv",
                       "poetry.lock": "or choose python_installer poetry"}
            found = next((f"{name} is here: {how}" for name, how in exports.items() if (self.root / name).is_file()), "")
            fail("no requirements.txt in the project: add one (pip freeze, pip-compile"
                 + (f"; {found})" if found else "), or choose python_installer uv, poetry or pipenv"))
        pending, files, local, links = [Path("requirements.txt")], {}, [], []
        while pending:
            relative = pending.pop(0)
            if relative in files:
                continue
            files[relative] = kept = []
            for number, line, physical in logical_lines((self.root / relative).read_text()):
                where = f"{relative} line {number}"
                include, find_links = INCLUDE.match(line), FIND_LINKS.match(line)
                target = local_path(line) if line else None
                if include and not URL.match(include.group(1)):
                    named = self.inside(self.root / relative.parent / include.group(1), include.group(1), where)
                    if not (self.root / named).is_file():
                        fail(f"{where} names {include.group(1)}, which is not a file")
                    pending.append(named)
                elif find_links and not URL.match(find_links.group(1)):
                    # pip looks beside the requirements file first, then from the working directory.
                    value = find_links.group(1).removeprefix("file:")
                    beside = self.root / relative.parent / value
                    links.append(self.inside(beside if beside.exists() else self.root / value, value, where))
                elif target is not None:
                    # pip reads a local path from the working directory, the project's root here.
                    path = EXTRAS.sub("", target.removeprefix("file://"))
                    local.append((target, self.inside(self.root / path, path, where)))
                    kept.extend(f"# installed after the other lines (docker/requirement-files.py): {p}" for p in physical)
                    continue
                kept.extend(physical)
        return files, local, links

    def write(self, out: Path) -> None:
        files, local, links = self.collect()
        out.mkdir(parents=True, exist_ok=True)
        # First: the requirement files written next replace their copies.
        for relative in links + [relative for _, relative in local]:
            source, target = self.root / relative, out / relative
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        for relative, lines in files.items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_text("\n".join(lines) + "\n")
        (out / ".local-requirements.txt").write_text("".join(f"{target}\n" for target, _ in local))
        if any("--hash=" in line for lines in files.values() for line in lines):
            (out / ".requirements-hashed").touch()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("usage: python requirement-files.py SOURCE OUT")
    Project(Path(sys.argv[1])).write(Path(sys.argv[2]))
