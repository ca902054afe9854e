"""The reading layer, measured on the built book (tools/book_metrics.py reads the HTML that `make book` wrote).

The rule (tools/reading_layer.py): every assert sits in a folded "Check: ..." cell, the install cell is folded,
no visible code line is wider than the page. Chapters 2 and 3 teach from small code, so their visible code
has a ceiling. The browser test (tests/test_browser.py) measures the overflow in a real page as well.

    BSSN_BOOK_HTML=path/to/html  pytest tests/test_book_html.py   # another build folder
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book_metrics  # noqa: E402
import reading_layer  # noqa: E402

HTML = Path(os.environ.get("BSSN_BOOK_HTML", ROOT / "_build" / "html")).resolve()
CHAPTERS = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
# visible code lines a teaching chapter may show (issue 19's targets)
CODE_CEILING = {"02_spectral": 350, "03_norms": 400}


@pytest.fixture(scope="module")
def metrics():
    if not (HTML / "nbs").is_dir():
        pytest.fail(f"{HTML / 'nbs'} is missing: build the book first (`make book`; `make test` does it)")
    return {r["page"]: r for r in book_metrics.book_metrics(HTML)}


def test_every_chapter_is_measured(metrics):
    assert sorted(metrics) == CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_reading_layer(metrics, chapter):
    m = metrics[chapter]
    assert m["asserts"] == 0, f"{chapter}: {m['asserts']} assert lines a reader sees"
    assert m["long"] == 0, f"{chapter}: {m['long']} visible code lines over {book_metrics.MAX_COLUMNS} characters"
    assert m["install_collapsed"], f"{chapter}: the install cell is not folded"
    assert m["code"] <= CODE_CEILING.get(chapter, 10 ** 9), f"{chapter}: {m['code']} visible code lines"


def test_checks_are_folded_behind_their_titles(metrics):
    "Every check cell of the notebooks became a folded toggle titled 'Check: ...' on its page."
    import json
    for chapter in CHAPTERS:
        nb = json.loads((ROOT / "nbs" / f"{chapter}.ipynb").read_text())
        n = sum(1 for c in nb["cells"] if c["cell_type"] == "code"
                and (reading_layer.title(c) or "").startswith(reading_layer.CHECK)
                and not any(l.strip() in ("#| hide", "#| include: false")
                            for l in reading_layer._src(c).splitlines()))
        assert metrics[chapter]["checks"] == n, (chapter, metrics[chapter]["checks"], n)


def test_the_metrics_see_what_they_measure(tmp_path):
    "book_metrics on a page made by hand: a visible assert, a folded check, a long line, a folded install cell."
    page = tmp_path / "nbs" / "x.html"
    page.parent.mkdir()
    long_line = "y = " + "1 + " * 30 + "1"
    page.write_text(f"""<html><body><article>
<div class="cell tag_hide-input"><details><summary><p>Setup</p></summary>
<div class="cell_input"><pre>import os</pre></div></details></div>
<p>Two words.</p>
<div class="cell"><div class="cell_input"><pre>x = 1\nassert x == 1\n{long_line}</pre></div>
<div class="cell_output"><img src="a.png"></div></div>
<div class="cell tag_hide-input"><details><summary><p>Check: x is one</p></summary>
<div class="cell_input"><pre>assert x == 1</pre></div></details></div>
</article></body></html>""")
    (m,) = book_metrics.book_metrics(tmp_path)
    assert (m["code"], m["asserts"], m["long"], m["checks"], m["figures"]) == (3, 1, 1, 1, 1)
    assert m["install_collapsed"] and m["words"] == 2


def test_the_notebook_rule_names_what_breaks_it(tmp_path):
    "reading_layer --check on a notebook made by hand: an assert outside a check cell, a form without cellView."
    import json
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "source": "x = 1\nassert x == 1"},
        {"cell_type": "code", "metadata": {}, "source": "#@title Check: x\nassert x == 1"},
        {"cell_type": "code", "metadata": {"cellView": "form"}, "source": "#@title Check: x\nassert x == 1"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "n.ipynb"
    p.write_text(json.dumps(nb))
    found = reading_layer.problems(p)
    assert len(found) == 2 and "cell 0: an assert outside a check cell" in found[0] and "cell 1" in found[1]
    assert reading_layer.fix(p) and reading_layer.problems(p)[1:] == [] and len(reading_layer.problems(p)) == 1


def test_no_cell_shows_a_figure_twice():
    """A cell whose last line returns a figure shows it twice: once from the inline backend, once as the cell's
    value (end such a line with ';'). Read from the executed notebooks the book is built from."""
    import json
    executed = ROOT / "_build" / "src" / "nbs"
    if not executed.is_dir():
        pytest.fail(f"{executed} is missing: build the book first (`make book`; `make test` does it)")
    twice = []
    for path in sorted(executed.glob("*.ipynb")):
        for i, c in enumerate(json.loads(path.read_text())["cells"]):
            pngs = [o["data"]["image/png"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
            if len(set(pngs)) < len(pngs):
                twice.append(f"{path.name} cell {i}")
    assert not twice, f"the same figure shown twice in: {', '.join(twice)}"
