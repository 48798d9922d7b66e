"""Golden renders (tests/golden.py): a fresh render of the working tree equals the committed one.
A difference is either a regression or an intended change: then run `python3 tests/golden.py`
and commit the new renders, so that the change to rendered output is reviewed as a diff."""

from __future__ import annotations

import difflib

import pytest

from golden import GOLDEN, VARIANTS, differences, render


@pytest.mark.parametrize("name", VARIANTS)
def test_render_equals_the_golden_render(name, tmp_path):
    fresh = render(name, tmp_path / name)
    changed = differences(GOLDEN / name, fresh)
    report = []
    for path in changed[:5]:
        old, new = GOLDEN / name / path, fresh / path
        if old.is_file() and new.is_file():
            report += difflib.unified_diff(old.read_text().splitlines(), new.read_text().splitlines(),
                                           f"golden/{name}/{path}", f"render/{path}", lineterm="", n=1)
    assert not changed, (f"the render of {name} differs from tests/golden/{name} in {changed}; if intended, "
                         "run `python3 tests/golden.py` and commit:\n" + "\n".join(report[:80]))
