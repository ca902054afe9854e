"""The chapters' sources: what no chapter may contain."""
import json
import re
from pathlib import Path

import pytest

NBS = sorted((Path(__file__).resolve().parents[1] / "nbs").glob("*.ipynb"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")


@pytest.mark.parametrize("path", NBS, ids=[p.name for p in NBS])
def test_no_control_characters(path):
    "A '\\a' left by an unescaped '\\approx' (or '\\b', '\\f' from '\\beta', '\\frac') breaks the math on the page."
    bad = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        src = "".join(cell["source"])
        bad += [f"cell {i}: {src[max(0, m.start() - 20):m.end() + 10]!r}" for m in CONTROL.finditer(src)]
    assert not bad, bad
