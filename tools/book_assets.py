"""Copy the JavaScript the book serves itself into the staged book source.

The built book references no CDN: MathJax 3, require.js and the ipywidgets
HTML manager come from `node_modules/` (installed from `package-lock.json`
by `npm ci`, which `make book` runs first) and land in `_build/src/_assets/`,
which `_config.yml` lists in Sphinx's `html_static_path` (so the HTML serves
them from `_static/`). The folder is not called `_static` on purpose: Jupyter
Book adds every .js file found under a source `_static/` to every page.

The script also checks that `_config.yml` agrees with the files it copies
(`mathjax_path`, `nb_ipywidgets_js`) and that the repository URL the launch
buttons are built from is the one in pyproject.toml's [project.urls].

The same file is a small Sphinx extension: the script copies itself to
`_build/src/_ext/book_assets.py` and `_config.yml` loads it
(`sphinx.local_extensions`). On every page it
- drops repeated inline scripts. Sphinx 7.4 lists a body-only script that an
  extension adds after the builder started (sphinx-thebe's configuration)
  twice, once as filename None and once as '', so every page declared
  `const THEBE_JS_URL` twice: a JavaScript SyntaxError in the console;
- on pages with ipywidgets, tells require.js where the widget manager's
  bundle lives (`_static/widgets/`): the bundle computes the URL of its
  fonts from its module path, which otherwise resolves next to the page
  (404s for every Font Awesome file);
- warns (an error under --warningiserror) about any script or style sheet on
  another host, so a CDN URL fails the build instead of the page.

    python tools/book_assets.py [--src _build/src]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "node_modules"
ASSETS = "_assets"
WIDGETS_EMBED = "widgets/embed-amd.js"  # as in _config.yml's nb_ipywidgets_js
EXT_DIR = "_ext"  # where the script puts its own copy, loaded by Sphinx as `book_assets`

# What MathJax's tex-chtml component needs at run time: the combined file, the
# components it loads lazily (TeX extensions through autoload, the menu and
# accessibility tools) and the CommonHTML fonts. Not the other combined builds.
MATHJAX_FILES = ["tex-chtml.js"]
MATHJAX_DIRS = ["input/tex/extensions", "output/chtml", "ui", "a11y", "sre", "adaptors"]


def copy_file(src: Path, dest: Path) -> int:
    if not src.is_file():
        raise SystemExit(f"book_assets: {src} is missing; run `npm ci` (make book does it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and dest.stat().st_size == src.stat().st_size \
            and dest.stat().st_mtime >= src.stat().st_mtime:
        return 0
    shutil.copy2(src, dest)
    return 1


def copy_tree(src: Path, dest: Path) -> int:
    if not src.is_dir():
        raise SystemExit(f"book_assets: {src} is missing; run `npm ci` (make book does it)")
    return sum(copy_file(p, dest / p.relative_to(src)) for p in src.rglob("*")
               if p.is_file() and not p.name.endswith(".map"))


# The book's icon (a sigma), so that browsers do not ask the server for a missing /favicon.ico.
FAVICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">
<rect width="64" height="64" rx="12" fill="#1f5fa6"/>
<text x="32" y="47" font-family="serif" font-size="44" text-anchor="middle" fill="#fff">\u03c3</text>
</svg>
"""


def planned_copies() -> list[tuple[Path, str]]:
    """(source in node_modules, destination relative to _assets/)."""
    mj = NODE / "mathjax" / "es5"
    out = [(mj / f, f"mathjax/{f}") for f in MATHJAX_FILES]
    out += [(mj / d, f"mathjax/{d}") for d in MATHJAX_DIRS]
    out.append((NODE / "requirejs" / "require.js", "widgets/require.js"))
    hm = NODE / "@jupyter-widgets" / "html-manager" / "dist"
    out.append((hm / "embed-amd.js", "widgets/embed-amd.js"))
    # The embed bundle's font files (Font Awesome), next to the bundle.
    out += [(p, f"widgets/{p.name}") for p in sorted(hm.glob("*"))
            if p.suffix in {".woff", ".woff2", ".ttf", ".eot", ".svg"}]
    return out


def check_config(config: dict) -> list[str]:
    """Problems with _config.yml: CDN URLs, paths that are not copied, a second repository URL."""
    errors = []
    sphinx = (config.get("sphinx") or {}).get("config") or {}
    copied = {dest for _, dest in planned_copies()}
    if ASSETS not in (sphinx.get("html_static_path") or []):
        errors.append(f"sphinx.config.html_static_path must list {ASSETS!r}")
    if (config.get("html") or {}).get("favicon") != f"{ASSETS}/favicon.svg":
        errors.append(f"html.favicon must be {ASSETS}/favicon.svg (written by this script)")
    mj = sphinx.get("mathjax_path", "")
    if mj not in copied:
        errors.append(f"sphinx.config.mathjax_path {mj!r} is not a copied file")
    for path in sphinx.get("nb_ipywidgets_js") or {}:
        if path not in copied:
            errors.append(f"sphinx.config.nb_ipywidgets_js entry {path!r} is not a copied file")
    if (sphinx_yaml := config.get("sphinx") or {}).get("local_extensions", {}).get("book_assets") != EXT_DIR:
        errors.append(f"sphinx.local_extensions must map book_assets to {EXT_DIR!r}")
    if not sphinx.get("nb_ipywidgets_js"):
        errors.append("sphinx.config.nb_ipywidgets_js must be set (myst-nb's default loads from CDNs)")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    repo = pyproject["project"]["urls"]["Repository"].rstrip("/")
    url = ((config.get("repository") or {}).get("url") or "").rstrip("/")
    if url != repo:
        errors.append(f"_config.yml repository.url {url!r} differs from pyproject's Repository {repo!r}")
    return errors


# The Sphinx extension (see the module docstring).
def _remote(uri) -> bool:
    return isinstance(uri, str) and ("://" in uri or uri.startswith("//"))


def _tidy_page_assets(app, pagename, templatename, context, doctree):
    from sphinx.util import logging
    log = logging.getLogger("book_assets")
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if not assets:
            continue
        seen, kept = set(), []
        for a in assets:
            name = getattr(a, "filename", a) or ""
            attrs = tuple(sorted((getattr(a, "attributes", None) or {}).items()))
            if (name, attrs) in seen:
                continue
            seen.add((name, attrs))
            kept.append(a)
            if _remote(name):
                log.warning(f"{pagename}: {key} loads {name} from another host; serve it from _static "
                            "(tools/book_assets.py, _config.yml)")
        if key == "script_files":
            embed = [i for i, a in enumerate(kept) if (getattr(a, "filename", "") or "").endswith(WIDGETS_EMBED)]
            if embed:
                base = context["pathto"]("_static/" + WIDGETS_EMBED.rsplit("/", 1)[0], 1)
                # Every module of the bundle (@jupyter-widgets/base, .../controls,
                # .../html-manager/dist/libembed-amd) takes its font URLs from its own
                # module path: map them all into _static/widgets/.
                body = (f'(function () {{ var w = new URL("{base}", document.baseURI).href.replace(/\\/$/, ""); '
                        'require.config({paths: {"@jupyter-widgets/html-manager/dist": w, '
                        '"@jupyter-widgets": w}}); })();')
                kept.insert(embed[0], type(kept[embed[0]])("", body=body, priority=kept[embed[0]].priority))
        assets[:] = kept


def setup(app):
    app.connect("html-page-context", _tidy_page_assets, priority=999)  # after every other extension
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT / "_build" / "src",
                    help="the staged book source (default: _build/src)")
    args = ap.parse_args(argv)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    errors = check_config(config)
    if errors:
        print("book_assets: _config.yml:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    dest = args.src / ASSETS
    n = 0
    for src, rel in planned_copies():
        n += copy_tree(src, dest / rel) if src.is_dir() else copy_file(src, dest / rel)
    icon = dest / "favicon.svg"
    if not icon.exists() or icon.read_text() != FAVICON:
        icon.write_text(FAVICON)
        n += 1
    n += copy_file(Path(__file__).resolve().parent / "book.css", dest / "bssn.css")   # the book's own style
    ext = args.src / EXT_DIR / "book_assets.py"
    ext.parent.mkdir(parents=True, exist_ok=True)
    n += copy_file(Path(__file__).resolve(), ext)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"book_assets: {n} files updated in {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
          f" ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
