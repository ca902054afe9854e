"""Make the documentation links nbdev writes land in the built book.

nbdev names a notebook's page after the notebook without its number (`nbs/03_norms.ipynb` -> `norms.html`)
and stores links such as `https://bssn-book.github.io/bssn-book/norms.html#apply_norm` in
`bssn_book/_modidx.py`, and `Docs: .../norms.html.md` in each module's docstring. Jupyter Book publishes the
chapter at `nbs/03_norms.html`. After the book is built, this script writes into `_build/html/`:

- `norms.html` (one per notebook, under nbdev's name): a page that forwards to `nbs/03_norms.html`, keeping the
  `#anchor`, and lists every symbol nbdev links to on it, each an element with the anchor's id;
- in the chapter page, an element with that id just before the symbol's definition (`def apply_norm`,
  `class SpectralNormW`, a method after its class), or at the top of the page when the definition is in a
  hidden cell, so that every link lands on the definition;
- `norms.html.md`: the chapter as Markdown (its Markdown cells, and its code cells fenced), what nbdev's
  `Docs:` links promise.

    python tools/doc_links.py [--html _build/html]
"""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path

from nbdev.config import nbpath2html

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
MARK = "bssn-doc-links"   # the forwarding pages carry <meta name="generator" content=MARK>
GAP = r'(?:\s|<span class="w">\s*</span>)*'   # the space between `def` and the name, as Pygments writes it


def modidx() -> dict:
    ns: dict = {}
    exec((ROOT / "bssn_book" / "_modidx.py").read_text(), ns)
    return ns["d"]


def doc_base(d: dict | None = None) -> str:
    "The book's URL as nbdev writes it into links (doc_host + doc_baseurl, from pyproject's Documentation URL)."
    s = (d or modidx())["settings"]
    return s["doc_host"].rstrip("/") + "/" + s["doc_baseurl"].strip("/") + "/"


def pages() -> dict[str, Path]:
    "nbdev's page name (norms.html) -> the chapter notebook."
    return {nbpath2html(p.name).name: p for p in sorted(NBS.glob("*.ipynb"))}


def anchors_by_page(d: dict | None = None) -> dict[str, list[tuple[str, str]]]:
    "nbdev page -> [(anchor, qualified symbol name)] from _modidx."
    out: dict[str, list[tuple[str, str]]] = {}
    for mod, syms in (d or modidx())["syms"].items():
        for sym, (link, _) in syms.items():
            page, _, anchor = link.partition("#")
            out.setdefault(page, []).append((anchor, sym[len(mod) + 1:]))
    return out


def _definition(text: str, qualname: str) -> int | None:
    "Offset in a Pygments-highlighted page where `qualname` (Name or Class.method) is defined, or None."
    start = 0
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        kinds = "nf" if (last and len(parts) > 1) else "(?:nf|nc)"
        name = re.escape(html.escape(part))
        found = [m for m in (re.compile(r'<span class="k">(?:def|class)</span>' + GAP + r'<span class="' + kinds
                                        + r'">' + name + r"</span>").search(text, start),
                             re.compile(r"\b(?:def|class) " + name + r"\b").search(text, start))   # not highlighted
                 if m]
        if not found:
            return None
        m = min(found, key=lambda m: m.start())
        start = m.start() if last else m.end()
    return start


def add_anchors(page_html: Path, anchors: list[tuple[str, str]]) -> int:
    "Insert an element with each anchor's id at its definition (or the top of the article); returns how many."
    text = page_html.read_text(encoding="utf-8")
    inserts = []
    top = next((text.find(">", i) + 1 for i in (text.find(t) for t in ('<article class="bd-article"', "<main", "<body"))
                if i >= 0), 0)   # where an anchor goes whose definition the page does not show
    for anchor, qual in anchors:
        if f'id="{html.escape(anchor)}"' in text:
            continue
        at = _definition(text, qual)
        inserts.append((at if at is not None else top, f'<span id="{html.escape(anchor)}"></span>'))
    for at, tag in sorted(inserts, key=lambda x: x[0], reverse=True):
        text = text[:at] + tag + text[at:]
    page_html.write_text(text, encoding="utf-8")
    return len(inserts)


def forwarding_page(target: str, title: str, anchors: list[tuple[str, str]]) -> str:
    items = "\n".join(f'<li><a id="{html.escape(a)}" href="{target}#{html.escape(a)}"><code>{html.escape(q)}</code></a></li>'
                      for a, q in sorted(anchors))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{MARK}">
<title>{html.escape(title)}</title>
<link rel="canonical" href="{target}">
<script>location.replace("{target}" + location.hash);</script>
<noscript><meta http-equiv="refresh" content="0; url={target}"></noscript>
</head><body>
<p>This page is <a href="{target}">{html.escape(title)}</a>. Its symbols:</p>
<ul>
{items}
</ul>
</body></html>
"""


def markdown(nb_path: Path) -> str:
    "The notebook as Markdown: its Markdown cells as they are, its code cells fenced (nbdev directives dropped)."
    cells = json.loads(nb_path.read_text())["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "markdown":
            parts.append(src.strip())
        elif c["cell_type"] == "code":
            code = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("#|")).strip()
            if code:
                parts.append(f"```python\n{code}\n```")
    return "\n\n".join(parts) + "\n"


def title_of(nb_path: Path) -> str:
    for c in json.loads(nb_path.read_text())["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and src.startswith("# "):
            return src.splitlines()[0][2:].strip()
    return nb_path.stem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    args = ap.parse_args(argv)
    out = args.html
    if not (out / "index.html").is_file():
        print(f"doc_links: {out / 'index.html'} is missing: build the book first", file=sys.stderr)
        return 1
    by_page = anchors_by_page()
    unknown = sorted(set(by_page) - set(pages()))
    if unknown:
        print(f"doc_links: _modidx.py links to pages no notebook makes: {unknown}", file=sys.stderr)
        return 1
    n_pages = n_anchors = 0
    for page, nb in pages().items():
        target = f"nbs/{nb.stem}.html"
        if not (out / target).is_file():
            print(f"doc_links: {target} is not in the built book", file=sys.stderr)
            return 1
        anchors = by_page.get(page, [])
        n_anchors += add_anchors(out / target, anchors)
        (out / page).write_text(forwarding_page(target, title_of(nb), anchors), encoding="utf-8")
        (out / (page + ".md")).write_text(markdown(nb), encoding="utf-8")
        n_pages += 1
    print(f"doc_links: {n_pages} forwarding pages and Markdown copies, {n_anchors} anchors added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
