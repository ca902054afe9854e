"""Execute the chapters once, for the tests and the book alike.

Each notebook in `nbs/` is copied to `_build/src/nbs/` and executed there by
`nbdev-test --save` (so a cell that raises fails the run), with
`BSSN_BOOK_STATIC=1` so interactive figures emit their precomputed frames.
A notebook is executed again only when it, the package or the files in
the result files (`experiments/`, `benchmarks/results/`, which the package ships through
`bssn_book/assets/results/`) changed: the key of what it was executed with is stored in the
executed copy's metadata. The chapters read those files through `bssn_book.results.path`, never
through a path into the repository: the run folder has no `experiments/` beside it, so a chapter
that tries fails here as it would in Colab. nbdev's cell directives are then turned into the
cell tags Jupyter Book understands (`#| hide` -> `remove-cell`, ...), and a cell whose first line is a
Colab form title (`#@title Check: ...`) is folded behind a toggle that shows the title (the checking layer).

    python tools/execute_nbs.py [--force] [NOTEBOOK ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SRC = ROOT / "_build" / "src"
BOOK_FILES = ["_toc.yml", "_config.yml", "index.md", "references.md", "references.bib"]
KEY = "bssn_exec_key"
DIRECTIVE = re.compile(r"^\s*#\|\s*(.*)$")
# A Colab form title (`#@title Check: ...`) folds a cell in Colab; the book folds it too, behind a toggle
# that carries the same title (tools/reading_layer.py states the rule and checks it).
TITLE = re.compile(r"^\s*#\s*@title\s+(.*?)\s*$")


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _files_under(folder: Path, pattern: str = "*"):
    if not folder.exists():
        return []
    return [p for p in folder.rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]


def context_key() -> str:
    """What every chapter depends on besides itself: the package and the result files it ships (experiments/ and
    benchmarks/results/, linked from bssn_book/assets/results/)."""
    deps = _files_under(ROOT / "bssn_book", "*.py") + _files_under(ROOT / "bssn_book" / "assets")
    deps += _files_under(ROOT / "experiments") + _files_under(ROOT / "benchmarks" / "results")
    deps += [ROOT / "pyproject.toml", ROOT / "requirements.txt"]
    return _digest(deps)


def executed_key(path: Path):
    try:
        return json.loads(path.read_text())["metadata"].get(KEY)
    except (OSError, ValueError, KeyError):
        return None


TAGS = {"hide": ["remove-cell"], "default_exp": ["remove-cell"], "echo: false": ["remove-input"],
        "output: false": ["remove-output"], "include: false": ["remove-cell"],
        "code-fold: true": ["hide-input"]}


def to_book_cell(cell: dict) -> dict:
    """Strip nbdev directives from a code cell and express them as Jupyter Book tags."""
    if cell.get("cell_type") != "code":
        return cell
    src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    lines, tags = src.splitlines(), set(cell.get("metadata", {}).get("tags", []))
    kept, head = [], True
    for line in lines:
        m = DIRECTIVE.match(line) if head else None
        if m:
            d = m.group(1).strip()
            for k, v in TAGS.items():
                if d == k or d.startswith(k + " ") or (k == "default_exp" and d.startswith("default_exp")):
                    tags.update(v)
            continue
        head = False  # directives only count at the top of a cell
        kept.append(line)
    title = TITLE.match(kept[0]) if kept else None
    if title:
        kept = kept[1:]
        # a titled cell folds its code; with the tag hide-output (the provenance box, say) its output
        # too, behind the same single toggle
        tags.add("hide-input")
        if "hide-output" in tags:
            tags -= {"hide-input", "hide-output"}
            tags.add("hide-cell")
        prompt = title.group(1)
        cell.setdefault("metadata", {})["mystnb"] = {"code_prompt_show": prompt, "code_prompt_hide": prompt}
    cell["source"] = "\n".join(kept)
    if tags:
        cell.setdefault("metadata", {})["tags"] = sorted(tags)
    return cell


def was_executed(path: Path) -> bool:
    "Whether nbdev-test saved this notebook: its code cells then carry execution metadata."
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return False
    code = [c for c in cells if c.get("cell_type") == "code"]
    return any("execution" in c.get("metadata", {}) for c in code)


def postprocess(path: Path, key: str) -> None:
    nb = json.loads(path.read_text())
    nb["cells"] = [to_book_cell(c) for c in nb["cells"]]
    md = nb.setdefault("metadata", {})
    md.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    md.setdefault("language_info", {"name": "python"})
    md[KEY] = key
    path.write_text(json.dumps(nb, indent=1))


def stage_book_files() -> None:
    SRC.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, SRC / name)
    for name in ("experiments", "benchmarks"):   # links earlier versions of this script made: chapters no longer see them
        if (SRC / name).is_symlink():
            (SRC / name).unlink()
    # Non-notebook files the chapters reference (images, data) keep their places.
    for p in _files_under(NBS):
        if p.suffix != ".ipynb":
            dest = SRC / "nbs" / p.relative_to(NBS)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to execute (default: all in nbs/)")
    ap.add_argument("--force", action="store_true", help="execute even when nothing changed")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    stage_book_files()
    ctx = context_key()
    sources = [Path(n).resolve() for n in args.notebooks] or sorted(NBS.glob("*.ipynb"))
    stale = []
    for src in sources:
        dest = SRC / "nbs" / src.name
        key = hashlib.sha256((ctx + src.read_text()).encode()).hexdigest()
        if args.force or executed_key(dest) != key:
            stale.append((src, dest, key))
    if not stale:
        print(f"execute_nbs: all {len(sources)} notebooks up to date")
        return 0
    run = SRC / "_run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for src, _, _ in stale:
        shutil.copy2(src, run / src.name)
    env = dict(os.environ, BSSN_BOOK_STATIC="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    print(f"execute_nbs: executing {len(stale)} of {len(sources)} notebooks: "
          + ", ".join(s.name for s, _, _ in stale), flush=True)
    t0 = time.time()
    cmd = [str(Path(sys.executable).parent / "nbdev-test"), str(run), "--save", "--timing",
           "--n-workers", str(min(args.workers, len(stale)))]
    res = subprocess.run(cmd, cwd=ROOT, env=env)
    # nbdev-test --save writes a notebook back only when all of it ran: keep those, so that after a
    # failure only the failed chapters run again.
    done = [(s, d, k) for s, d, k in stale if was_executed(run / s.name)]
    for src, dest, key in done:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run / src.name), dest)
        postprocess(dest, key)
    if res.returncode != 0 or len(done) < len(stale):
        kept = {s.name for s, _, _ in done}
        failed = sorted(s.name for s, _, _ in stale if s.name not in kept)
        print(f"execute_nbs: failed (traceback above): {', '.join(failed) or 'see above'}; "
              f"{len(done)} other notebooks were kept", file=sys.stderr)
        return res.returncode or 1
    shutil.rmtree(run, ignore_errors=True)
    print(f"execute_nbs: done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
