"""The two layers of every page, stated once and checked in the notebooks themselves.

The rule (one for every chapter):

- **Reading layer**: prose, math, the code worth reading, figures, one printed comparison per claim.
- **Checking layer**: every `assert` sits in a *check cell*: a code cell whose first line is a Colab form
  title, `#@title Check: <what it checks>`. The book folds such a cell behind a toggle that shows the title
  (tools/execute_nbs.py), Colab shows it as a collapsed form (cell metadata `cellView: form`, which this
  script writes), and nbdev-test runs it like any other cell. A check cell's own output, if any, stays
  visible: print the comparison a reader should see in a reading cell, assert on it in the check cell.
- Other cells may carry a title too (the install cell: `#@title Setup: ...`); they fold the same way.
- `#| hide` (removed from the page) is for setup a reader never needs, never for checks.
- Every code line is at most `MAX_COLUMNS` characters (no horizontal scroll on the page).
- A cell that draws a conceptual diagram (not a result) carries the cell tag `diagram`.

    python tools/reading_layer.py            # write cellView: form on every titled cell
    python tools/reading_layer.py --check    # exit 1 naming every cell that breaks the rule (make test)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
MAX_COLUMNS = 88
ASSERT = re.compile(r"^\s*assert\b")
DIRECTIVE = re.compile(r"^\s*#\|")
TITLE = re.compile(r"^\s*#\s*@title\s+(.*?)\s*$")
CHECK = "Check:"


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def title(cell) -> str | None:
    "The Colab form title of a code cell (its first line after nbdev directives), or None."
    lines = [l for l in _src(cell).splitlines() if not DIRECTIVE.match(l)]
    m = TITLE.match(lines[0]) if lines else None
    return m.group(1) if m else None


def problems(path: Path) -> list[str]:
    "Every way notebook `path` breaks the rule, one line each."
    nb = json.loads(path.read_text())
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        src, t = _src(cell), title(cell)
        where = f"{path.name} cell {i}"
        lines = src.splitlines()
        if any(ASSERT.match(l) for l in lines) and not (t or "").startswith(CHECK):
            first = next(l for l in lines if ASSERT.match(l)).strip()
            out.append(f"{where}: an assert outside a check cell (first: {first[:60]!r}); "
                       f"start the cell with '#@title {CHECK} ...'")
        if t is not None and cell.get("metadata", {}).get("cellView") != "form":
            out.append(f"{where}: titled cell without cellView: form (run tools/reading_layer.py)")
        if t is not None and t.startswith(CHECK) and any(l.strip().startswith("#| export") for l in lines):
            out.append(f"{where}: a check cell exports code; checks stay out of the package")
        for j, l in enumerate(lines):
            if len(l) > MAX_COLUMNS:
                out.append(f"{where} line {j + 1}: {len(l)} characters (at most {MAX_COLUMNS})")
    return out


def fix(path: Path) -> bool:
    "Write cellView: form on every titled cell of `path`; True when the file changed."
    nb = json.loads(path.read_text())
    changed = False
    for cell in nb["cells"]:
        if cell.get("cell_type") == "code" and title(cell) is not None:
            md = cell.setdefault("metadata", {})
            if md.get("cellView") != "form":
                md["cellView"] = "form"
                changed = True
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in nbs/")
    ap.add_argument("--check", action="store_true", help="report, change nothing; exit 1 on any problem")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NBS.glob("*.ipynb"))
    if not args.check:
        for p in paths:
            if fix(p):
                print(f"reading_layer: wrote cellView: form in {p.name}")
        return 0
    found = [msg for p in paths for msg in problems(p)]
    for msg in found:
        print(msg)
    if found:
        print(f"reading_layer: {len(found)} problem(s) in "
              f"{len({m.split(' cell ')[0] for m in found})} notebook(s)", file=sys.stderr)
        return 1
    print(f"reading_layer: {len(paths)} notebooks keep their checks in check cells, lines <= {MAX_COLUMNS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
