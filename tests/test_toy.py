"""experiments/toy/run.py, the script behind chapter 1's toy-GAN widget: what it writes, that it is
deterministic, that the committed result file is what it produces, and that the chapter shows its code."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "experiments" / "toy" / "results" / "toy.json"
CHAPTER = ROOT / "nbs" / "01_gan_failures.ipynb"


@pytest.fixture(scope="module")
def toy():
    spec = importlib.util.spec_from_file_location("toy_run", ROOT / "experiments" / "toy" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["toy_run"] = mod   # pickling one_run by name, should a test use --jobs > 1
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("toy_run", None)


@pytest.fixture(scope="module")
def committed():
    return json.loads(RESULT.read_text())


def test_a_run_is_deterministic(toy):
    a = toy.train_gan("bssn", 1.5, 1e-3, seed=3, steps=60, every=20, keep=(40,))
    b = toy.train_gan("bssn", 1.5, 1e-3, seed=3, steps=60, every=20, keep=(40,))
    assert a[0] == b[0] and a[1].keys() == b[1].keys() == {40}
    assert (a[1][40] == b[1][40]).all()
    c = toy.train_gan("bssn", 1.5, 1e-3, seed=4, steps=60, every=20)
    assert c[0] != a[0]   # the seed matters


def test_main_writes_what_the_chapter_reads(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "KEEP", (50, 150))
    out = tmp_path / "toy.json"
    toy.main(["--steps", "100", "--lrs", "1e-3", "--seeds", "0", "1", "--out", str(out)])
    d = json.loads(out.read_text())
    meta, runs = d["meta"], d["runs"]
    assert (meta["steps"], meta["lrs"], meta["seeds"], meta["keep"]) == (100, [1e-3], [0, 1], [50])
    assert sorted((r["norm"], r["c"], r["lr"], r["seed"]) for r in runs) == sorted(toy.grid([1e-3], [0, 1]))
    for r in runs:
        assert set(r["log"]) == {"step", "modes", "good", "grad", "prod"}
        assert r["log"]["step"] == [0, 50, 100]
        assert set(r["samples"]) == ({"50"} if r["seed"] == 0 else set())   # seed 0's samples only
        assert all(len(p) == 2 for p in r["samples"].get("50", []))
    assert meta["command"] == toy.COMMAND and "run.py" in meta["command"]


def test_the_committed_file_is_the_scripts_output(toy, committed):
    "The start of two committed runs, rerun now: the same numbers (to another CPU's rounding)."
    every = committed["meta"]["every"]
    for args in [("none", 1.0, 3e-4, 1), ("sn", 1.0, 1e-2, 2)]:
        log, _ = toy.train_gan(*args, steps=4 * every, every=every)
        stored = next(r for r in committed["runs"] if (r["norm"], r["c"], r["lr"], r["seed"]) == args)["log"]
        for i, row in enumerate(log):
            assert row["modes"] == stored["modes"][i]
            for k in ("grad", "prod", "good"):
                assert math.isclose(row[k], stored[k][i], rel_tol=1e-3, abs_tol=1e-3), (args, k, i)


def test_the_committed_grid_is_complete_and_small(toy, committed):
    meta = committed["meta"]
    assert (meta["steps"], meta["lrs"], meta["seeds"], meta["keep"]) == (toy.STEPS, toy.LRS, toy.SEEDS, list(toy.KEEP))
    assert meta["norms"] == toy.NORMS
    assert sorted((r["norm"], r["c"], r["lr"], r["seed"]) for r in committed["runs"]) == sorted(toy.grid())
    frames = len(toy.NORMS) * max(map(len, toy.NORMS.values())) * len(toy.LRS)
    assert frames <= 64   # bssn_book.widgets.MAX_FRAMES: normalization x c x lr
    assert RESULT.stat().st_size < 3e6
    assert meta["code"]["commit"] and "experiments/toy/run.py" not in meta["code"].get("dirty", [])


def test_the_chapter_shows_the_scripts_toy():
    "Chapter 1 shows the functions that made its result file, verbatim."
    src = (ROOT / "experiments" / "toy" / "run.py").read_text()
    block = src[src.index("K, RADIUS, STD"):src.index("# --- end of the toy")].rstrip()
    cells = ["".join(c["source"]) for c in json.loads(CHAPTER.read_text())["cells"] if c["cell_type"] == "code"]
    assert any(block in c for c in cells), "nbs/01_gan_failures.ipynb lost or changed experiments/toy/run.py's toy"
