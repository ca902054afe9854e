"""Every documentation link the package prints or stores lands on a page and an anchor of the built book.

The links: `bssn_book/_modidx.py` (nbdev's symbol -> page#anchor index), the `Docs:` line of every module's
docstring, pyproject.toml's Documentation URL and the README's links into the book. They are resolved against
`_build/html` (built by `make book`, which runs tools/doc_links.py; `make test` builds it before pytest).
"""
import html
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BSSN_BOOK_HTML", ROOT / "_build" / "html")).resolve()
sys.path.insert(0, str(ROOT / "tools"))
import doc_links  # noqa: E402

BUILT = (HTML / "index.html").is_file()
HOW_TO_BUILD = f"{HTML / 'index.html'} is missing: build the book first (`make book`; `make test` does it)"


def documentation_links():
    "(where the link is written, the URL) for every link into the book the package prints or stores."
    d = doc_links.modidx()
    base = doc_links.doc_base(d)
    links = [(f"_modidx {sym}", base + link) for syms in d["syms"].values() for sym, (link, _) in syms.items()]
    for py in sorted((ROOT / "bssn_book").rglob("*.py")):
        m = re.search(r"Docs: (\S+?)(?:\"\"\"|\s)", py.read_text())
        if m:
            links.append((str(py.relative_to(ROOT)), m.group(1)))
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    links.append(("pyproject Documentation", urls["Documentation"]))
    links += [("README.md", u) for u in re.findall(r"https?://[^\s)>\]\"'`]+", (ROOT / "README.md").read_text())
              if u.startswith(base)]
    return base, links


def test_there_are_links_of_every_kind():
    base, links = documentation_links()
    where = {w.split()[0] for w, _ in links}
    assert {"_modidx", "pyproject", "README.md"} <= where and any(w.startswith("bssn_book/") for w in where)
    assert base == urls_doc() and all(u.startswith(base) for _, u in links)


def urls_doc():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Documentation"].rstrip("/") + "/"


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


def test_every_link_lands_on_a_page_and_anchor_of_the_book():
    if not BUILT:
        pytest.fail(HOW_TO_BUILD)
    base, links = documentation_links()
    problems = []
    for where, url in links:
        rel, _, anchor = url[len(base):].partition("#")
        page = HTML / (rel or "index.html")
        if rel.endswith("/"):
            page = page / "index.html"
        if not page.is_file():
            problems.append(f"{where}: {url} -> no {page.relative_to(HTML)}")
            continue
        anchor = html.unescape(anchor)
        if anchor and anchor not in _ids(page):
            problems.append(f"{where}: {url} -> {page.relative_to(HTML)} has no id {anchor!r}")
            continue
        text = page.read_text(encoding="utf-8")
        fwd = re.search(r'<link rel="canonical" href="([^"]+)">', text) if doc_links.MARK in text else None
        if fwd:   # a forwarding page: the chapter it forwards to has the anchor too
            target = HTML / fwd.group(1)
            if not target.is_file() or (anchor and anchor not in _ids(target)):
                problems.append(f"{where}: {url} forwards to {fwd.group(1)}, which lacks id {anchor!r}")
    assert not problems, f"{len(problems)} of {len(links)} links do not land:\n  " + "\n  ".join(problems[:30])


def test_anchors_are_placed_at_the_definitions(tmp_path):
    "On a page highlighted as Sphinx does it, a function, a class and a method get their anchors where defined."
    code = "x = 1\n\nclass Thing:\n    def run(self):\n        pass\n\ndef apply_norm(m):\n    return m\n"
    body = highlight(code, PythonLexer(), HtmlFormatter())
    page = tmp_path / "p.html"
    page.write_text(f'<html><body><article class="bd-article" role="main">{body}</article></body></html>')
    assert doc_links.add_anchors(page, [("apply_norm", "apply_norm"), ("thing", "Thing"), ("thing.run", "Thing.run"),
                                        ("hidden", "not_shown")]) == 4
    text, GAP = page.read_text(), doc_links.GAP
    assert re.search(rf'<span id="apply_norm"></span><span class="k">def</span>{GAP}<span class="nf">apply_norm', text)
    assert re.search(rf'<span id="thing"></span><span class="k">class</span>{GAP}<span class="nc">Thing', text)
    assert re.search(rf'<span id="thing.run"></span><span class="k">def</span>{GAP}<span class="nf">run', text)
    assert '<article class="bd-article" role="main"><span id="hidden"></span>' in text   # the top of the page
    assert doc_links.add_anchors(page, [("apply_norm", "apply_norm")]) == 0              # idempotent


def test_every_page_nbdev_links_to_has_a_notebook():
    assert set(doc_links.anchors_by_page()) <= set(doc_links.pages())
