"""The map and the notation page (nbs/A4_notation.ipynb) agree with the book they describe.

The page runs alone in Colab, where neither the table of contents nor the other chapters exist, so what needs
the repository is checked here: the map names every chapter of `_toc.yml` in its order, and every symbol of the
notation table appears in the chapter the table says defines it.
"""
import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "nbs" / "A4_notation.ipynb"


def _assigned(name):
    "The literal value assigned to `name` in a code cell of the notation page."
    for cell in json.loads(PAGE.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:   # the install cell's %pip line
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not assigned on {PAGE.name}")


def test_the_map_lists_the_numbered_chapters_of_the_toc_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    numbered = []
    for f in files:
        nb = ROOT / f"{f}.ipynb"
        if not nb.exists():
            continue
        title = next(l for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown"
                     for l in "".join(c["source"]).splitlines() if l.startswith("# "))
        if re.match(r"# Chapter \d+\.", title):
            numbered.append((Path(f).name, title.split()[2].rstrip(".")))
    chapters = _assigned("CHAPTERS")
    assert [(k, v[0]) for k, v in chapters.items()] == numbered


def test_every_symbol_appears_in_its_chapter():
    for symbol, _, chapter in _assigned("SYMBOLS"):
        text = " ".join("".join(c["source"]) for c in json.loads((ROOT / "nbs" / f"{chapter}.ipynb").read_text())
                        ["cells"] if c["cell_type"] == "markdown")
        squeeze = lambda s: re.sub(r"\s+", "", s)
        parts = [p.strip("$ ") for p in re.findall(r"\$[^$]+\$", symbol)]
        missing = [p for p in parts if squeeze(p) not in squeeze(text)]
        assert not missing, f"{missing} (symbol {symbol!r}) not in the text of {chapter}"
