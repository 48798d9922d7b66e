"""The requirement files pip reads, apart from the rest of the source (run by the Dockerfile).

    python requirement-files.py SOURCE OUT

Copies SOURCE/requirements.txt, and every file it names with -r/--requirement or -c/--constraint
(relative to the naming file, as pip reads them), to OUT/tree/ with the same layout: the image's
dependency layer is keyed on these files alone. Lines that install a local path (".", "-e .",
"./libs/x", "-e file:.") need the source, which that layer does not have: they are taken out of
the copies (commented) and listed in OUT/local.txt, without "-e", for the build stage to install
once the source is in (not editable: the image has no checkout to edit).

Exits 1 with a one-line reason when a named file is missing or outside SOURCE.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

INCLUDE = re.compile(r"^(?:-[rc]\s*|--(?:requirement|constraint)(?:\s*=\s*|\s+))(\S+)$")
EDITABLE = re.compile(r"^(?:-e|--editable)(?:\s*=\s*|\s+)(\S.*)$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


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
        target = target.removeprefix("file:")  # pip-compile writes "-e file:."
    return target if target.startswith((".", "/", "file://")) else None


def collect(source: Path, out: Path) -> None:
    root = source.resolve()
    # (the file, as written where it is named, the naming file and line; 0: the first file)
    pending, seen, local = [(root / "requirements.txt", "requirements.txt", "", 0)], set(), []
    while pending:
        path, written, named_by, line_number = pending.pop(0)
        where = f"{named_by} line {line_number}"
        if not path.resolve().is_relative_to(root):
            fail(f"{where} names {written}, outside the project: the image is built from this directory only")
        relative = path.resolve().relative_to(root)
        if relative in seen:
            continue
        if not path.is_file():
            if not line_number:
                fail("no requirements.txt in the project: add one (pip freeze, pip-compile), "
                     "or choose python_installer uv or poetry")
            fail(f"{where} names {relative}, which is not in the build context (check .dockerignore)")
        seen.add(relative)
        kept = []
        for number, line, physical in logical_lines(path.read_text()):
            include = INCLUDE.match(line)
            if include and not URL.match(include.group(1)):
                pending.append((path.parent / include.group(1), include.group(1), str(relative), number))
            elif line and local_path(line) is not None:
                local.append(local_path(line))
                kept.extend(f"# installed once the source is in (docker/requirement-files.py): {p}" for p in physical)
                continue
            kept.extend(physical)
        target = out / "tree" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(kept) + "\n")
    (out / "local.txt").write_text("".join(f"{p}\n" for p in local))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("usage: python requirement-files.py SOURCE OUT")
    collect(Path(sys.argv[1]), Path(sys.argv[2]))
