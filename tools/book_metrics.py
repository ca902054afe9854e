"""What a reader sees on each page of the built book: the measure of the two-layer rule.

For every chapter page under `_build/html/nbs/` this counts, from the HTML alone:

- `code`: visible code lines (non-blank lines of code cells whose input is neither removed nor
  collapsed behind a toggle);
- `asserts`: visible lines that start with `assert` (the checking layer must hold them all);
- `long`: visible code lines longer than `MAX_COLUMNS` characters;
- `checks`: collapsed "Check: ..." cells (the checking layer, one toggle each);
- `words`: prose words (the page's text outside code cells and their outputs);
- `figures`: images in cell outputs and in the prose;
- `diagrams`: cells tagged `diagram` (a conceptual figure drawn by code, not a result);
- `install_collapsed`: whether the page's first code cell (the install cell) is collapsed.

    python tools/book_metrics.py [--html _build/html] [--json out.json]   # prints a Markdown table

`tests/test_book_html.py` asserts the rule on these numbers; the closing notes quote the table.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_COLUMNS = 88
ASSERT = re.compile(r"^\s*assert\b")


def _hidden(cell) -> bool:
    "The cell's input is removed or folded away (Jupyter Book tag or a <details> toggle)."
    classes = " ".join(cell.get("class", []))
    inp = cell.select_one("div.cell_input")
    return (inp is None or "tag_remove-input" in classes or "tag_remove-cell" in classes
            or "tag_hide-input" in classes or "tag_hide-cell" in classes
            or inp.find_parent("details") is not None)


def page_metrics(path: Path) -> dict:
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(path.read_text(errors="ignore"), "html.parser")
    article = soup.select_one("article") or soup
    cells = article.select("div.cell")
    code = asserts = long = checks = diagrams = 0
    longest = 0
    for cell in cells:
        classes = cell.get("class", [])
        if "tag_diagram" in classes:
            diagrams += 1
        summary = cell.select_one("details summary")
        if summary is not None and "Check:" in summary.get_text():
            checks += 1
        if _hidden(cell):
            continue
        pre = cell.select_one("div.cell_input pre")
        lines = [l for l in (pre.get_text() if pre else "").splitlines() if l.strip()]
        code += len(lines)
        asserts += sum(1 for l in lines if ASSERT.match(l))
        long += sum(1 for l in lines if len(l) > MAX_COLUMNS)
        longest = max([longest] + [len(l) for l in lines])
    install_collapsed = bool(cells) and _hidden(cells[0])
    figures = len(article.select("div.cell_output img")) + len(
        [i for i in article.select("img") if i.find_parent("div", class_="cell") is None])
    for cell in cells:
        cell.decompose()
    for junk in article.select("script, style, .headerlink, nav"):
        junk.decompose()
    words = len(article.get_text(" ").split())
    return {"page": path.stem, "code": code, "asserts": asserts, "long": long, "longest": longest,
            "checks": checks, "words": words, "figures": figures, "diagrams": diagrams,
            "install_collapsed": install_collapsed}


def book_metrics(html: Path) -> list[dict]:
    return [page_metrics(p) for p in sorted((html / "nbs").glob("*.html"))]


def table(rows: list[dict]) -> str:
    cols = ["page", "code", "asserts", "long", "checks", "words", "figures", "diagrams", "install_collapsed"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    tot = {c: sum(r[c] for r in rows) for c in cols[1:-1]}
    out.append("| total | " + " | ".join(str(tot[c]) for c in cols[1:-1]) + " | |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not (args.html / "nbs").is_dir():
        print(f"{args.html / 'nbs'} is missing: build the book first (make book)", file=sys.stderr)
        return 1
    rows = book_metrics(args.html)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
