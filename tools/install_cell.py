"""The first code cell of every chapter: one text, the chapter's extras, written and checked from here.

A chapter opened alone (Colab's "Open in Colab", or a download) has no repository around it: its first code
cell installs the package with exactly the extras the chapter needs, unless it is already importable with them.
This file is the one source of that cell's text and of the extras per chapter (`EXTRAS`). The package source
is the repository of `_config.yml` (the book's one repository URL); the environment variable `BSSN_BOOK_PIP`,
when set, replaces it (the Colab test points it at a wheel built from the checkout), so the published cell
stays the real one. IPython expands `{...}` in a `%pip` line.

    python tools/install_cell.py           # rewrite the install cells that differ
    python tools/install_cell.py --check   # exit 1 and name every chapter whose cell differs (make test, pytest)

A new chapter must be added to `EXTRAS` (--check names one that is missing). Directive lines (`#| default_exp`)
at the top are kept; a chapter whose first code cell with more than directives is not an install cell gets one
inserted before it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
ENV_VAR = "BSSN_BOOK_PIP"
MARK = "# Colab / a fresh machine:"   # how an install cell is recognised (its first line after directives)

# What each extra adds (pyproject.toml's [project.optional-dependencies]) and the modules whose import shows
# that it is installed: the cell skips pip when the package and these all import.
EXTRA_MODULES = {"metrics": ["torch_fidelity"], "data": ["sklearn", "mlxtend", "PIL"], "docs": ["nbdev"]}

# The extras each chapter needs (checked against what its code uses by tests/test_colab.py).
#   metrics: torch-fidelity (compute_metrics, `bssn-book eval`); data: scikit-learn, mlxtend, pillow
#   (bssn_book.data's digits, MNIST and image folders); docs: nbdev (A1's show_doc).
EXTRAS = {
    "01_gan_failures": [], "02_spectral": [], "03_norms": [], "04_exploding": [], "05_vanishing": [],
    "06_training": ["data"], "07_bssn": [], "09_guide": ["data"], "11a_models": [], "11b_losses": [],
    "11c_data": ["data"], "11d_metrics": ["metrics", "data"], "11e_train": ["data"], "11f_cli": ["metrics", "data"],
    "08_evidence": ["data"], "12_recipe": ["metrics", "data"], "A1_api": ["docs"], "A2_benchmarks": [],
    "A3_widgets": [], "10_inside": [], "A4_notation": [], "08a_more_results": ["data"],
}


def repository_url() -> str:
    "The book's one repository URL: `repository.url` of _config.yml."
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


TITLE = "#@title Setup: install bssn-book if it is missing (Colab, a fresh machine)"


def cell_text(extras: list[str]) -> str:
    """The install cell (without directives) for a chapter needing `extras`. Its first line is a Colab form
    title: the cell folds in Colab and in the book (tools/reading_layer.py), and stays the first code cell."""
    unknown = sorted(set(extras) - set(EXTRA_MODULES))
    if unknown:
        raise ValueError(f"install_cell: unknown extras {unknown}; known: {sorted(EXTRA_MODULES)}")
    req = "bssn-book" + (f"[{','.join(extras)}]" if extras else "")
    mods = ["bssn_book"] + [m for e in extras for m in EXTRA_MODULES[e]]
    return (f"{TITLE}\n"
            f"{MARK} install the package with this chapter's extras\n"
            "# (tools/install_cell.py), then report the device. The rest (matplotlib, pandas, scipy,\n"
            "# ipywidgets) is what Colab and Binder preinstall. $BSSN_BOOK_PIP, when set, replaces\n"
            "# the package source (the tests use a wheel).\n"
            "import os\n"
            "try:\n"
            f"    import {', '.join(mods)}\n"
            "except ImportError:\n"
            f"    repository = \"git+{repository_url()}\"\n"
            f"    source = os.environ.get(\"{ENV_VAR}\", repository)\n"
            f"    %pip install -q \"{req} @ {{source}}\"\n"
            "import torch\n"
            'device = "cuda" if torch.cuda.is_available() else "cpu"\n'
            'print("torch", torch.__version__, "| device:", device)')


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _split(src: str) -> tuple[list[str], str]:
    "Directive lines at the top of a cell, and the rest."
    lines = src.splitlines()
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#|"):
        i += 1
    return lines[:i], "\n".join(lines[i:])


def is_install_cell(src: str) -> bool:
    body = _split(src)[1]
    if body.startswith("#@title"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
    return body.startswith(MARK) or body.startswith("# Colab / fresh machine:")  # today's text, or the old one


def expected(nb_path: Path, nb: dict) -> tuple[int, str, bool]:
    """(index of the install cell, its expected source, whether it must be inserted)."""
    name = nb_path.stem
    if name not in EXTRAS:
        raise KeyError(f"install_cell: {nb_path.name} is not in tools/install_cell.py's EXTRAS; add it with the "
                       f"extras it needs ({sorted(EXTRA_MODULES)})")
    # the first code cell with more than directives (A3's first holds only `#| default_exp`)
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and _split(_src(c))[1].strip()]
    if not code:
        raise ValueError(f"install_cell: {nb_path.name} has no code cell")
    first = code[0]
    directives, _ = _split(_src(nb["cells"][first]))
    if is_install_cell(_src(nb["cells"][first])):
        return first, "\n".join(directives + [cell_text(EXTRAS[name])]), False
    return first, cell_text(EXTRAS[name]), True


def differing(paths=None) -> list[str]:
    "Names of the chapters whose install cell is not the expected one (or is missing)."
    bad = []
    for p in paths or sorted(NBS.glob("*.ipynb")):
        nb = json.loads(p.read_text())
        i, want, insert = expected(p, nb)
        if insert or _src(nb["cells"][i]) != want or nb["cells"][i].get("metadata", {}).get("cellView") != "form":
            bad.append(p.name)
    return bad


def write(paths=None) -> list[str]:
    "Rewrite the install cells that differ; returns the names of the notebooks changed."
    changed = []
    for p in paths or sorted(NBS.glob("*.ipynb")):
        text = p.read_text()
        nb = json.loads(text)
        i, want, insert = expected(p, nb)
        if insert:
            cell_id = hashlib.sha256(f"{p.stem} install cell".encode()).hexdigest()[:8]
            nb["cells"].insert(i, {"cell_type": "code", "execution_count": None, "id": cell_id,
                                   "metadata": {"cellView": "form"},
                                   "outputs": [],
                                   "source": want.splitlines(keepends=True)})
        elif _src(nb["cells"][i]) != want or nb["cells"][i].get("metadata", {}).get("cellView") != "form":
            nb["cells"][i]["source"] = want.splitlines(keepends=True)   # nbdev-clean's layout: a list of lines
            nb["cells"][i].setdefault("metadata", {})["cellView"] = "form"   # a collapsed form in Colab
        else:
            continue
        # the layout nbdev-clean writes (indent 1, a final newline); nbdev-clean then normalises the rest
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        changed.append(p.name)
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report chapters whose install cell differs")
    ap.add_argument("notebooks", nargs="*", type=Path)
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or None
    if args.check:
        bad = differing(paths)
        if bad:
            print("install_cell: these chapters' install cells differ from tools/install_cell.py "
                  f"(run `python tools/install_cell.py`): {', '.join(bad)}", file=sys.stderr)
            return 1
        print("install_cell: every chapter's install cell is the shared one")
        return 0
    changed = write(paths)
    print(f"install_cell: rewrote {', '.join(changed) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
