"""The result files the chapters read ship with the package (bssn_book.results, Appendix A).

One copy lives in git, where the scripts write it (experiments/, benchmarks/results/); bssn_book/assets/results/
links to it, and the wheel carries the files themselves.
"""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bssn_book import results

ROOT = Path(__file__).resolve().parents[1]
LINKS = ROOT / "bssn_book" / "assets" / "results"
# each link and the folder or file of the repository it stands for (where its script writes)
EXPECTED = {"evidence/results": "experiments/evidence/results", "evidence/results-r32": "experiments/evidence/results-r32",
            "evidence/results-r32-long": "experiments/evidence/results-r32-long", "evidence/config.json": "experiments/evidence/config.json",
            "evidence/config_ring.json": "experiments/evidence/config_ring.json",
            "feature_extractor/result.json": "experiments/feature_extractor/result.json",
            "bench": "benchmarks/results", "toy": "experiments/toy/results",
            "evidence/results-cpus": "experiments/evidence/results-cpus",   # experiments/evidence/cpus.py
            "evidence/results-r32-long-official": "experiments/evidence/results-r32-long-official",
            "evidence/results-mechanism": "experiments/evidence/results-mechanism"}


def _shipped_files():
    """Relative names (under bssn_book/assets/results/) of every file git tracks in the folders and files the links
    stand for, whatever its type: the wheel must carry all of them (a suffix filter here would let a new file type
    go missing from the wheel unnoticed)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *EXPECTED.values()], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"git ls-files is unavailable here ({e})")
    names = []
    for f in filter(None, out.split("\0")):
        link, target = next((k, t) for k, t in EXPECTED.items() if f == t or f.startswith(t + "/"))
        names.append(link + f[len(target):])
    assert names, "git ls-files found none of the linked result files"
    return sorted(names)


def test_links_point_at_the_one_copy_in_git():
    links = {str(p.relative_to(LINKS)): p for p in LINKS.glob("**/*") if p.is_symlink()}
    assert sorted(links) == sorted(EXPECTED)
    for name, target in EXPECTED.items():
        assert links[name].resolve() == (ROOT / target).resolve(), name
        assert links[name].exists(), f"{name} -> {target} is dangling"


def test_every_result_of_the_scripts_is_reachable():
    "A new results folder written by experiments/evidence/run.py must be linked (and so shipped) too."
    written = sorted(p.name for p in (ROOT / "experiments" / "evidence").glob("results*") if p.is_dir())
    linked = sorted(Path(k).name for k in EXPECTED if k.startswith("evidence/results"))
    assert written == linked, f"experiments/evidence has {written}; bssn_book/assets/results/evidence links {linked}"


def test_path_finds_files_and_names_what_is_wrong():
    assert results.path("evidence/results/runs.csv").is_file()
    assert results.path("toy/toy.json").is_file()   # chapter 1's toy GAN (experiments/toy/run.py)
    assert json.loads(results.path("bench/d_step.json").read_text())["rows"]
    with pytest.raises(FileNotFoundError, match="'evidence/nope.csv'.*evidence/results"):
        results.path("evidence/nope.csv")
    for bad in ("../pyproject.toml", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="relative name"):
            results.path(bad)


def test_the_bootstrap_settings_recorded_are_the_code_s():
    "Appendix B prints the draws and level from d_step.json; they must be what benchmarks/run.py's bootstrap_ci uses."
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert json.loads(results.path("bench/d_step.json").read_text())["bootstrap"] == run.bootstrap_settings()


def test_the_wheel_carries_the_results_and_stays_small(tmp_path):
    shutil.rmtree(ROOT / "build", ignore_errors=True)   # setuptools' staging folder: a stale file would ship
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, cwd=ROOT)
    wheel, = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = {n for n in z.namelist() if n.startswith("bssn_book/assets/results/")}
        assert names == {f"bssn_book/assets/results/{n}" for n in _shipped_files()}
        assert all(not z.getinfo(n).external_attr >> 28 == 0o12 for n in names)   # files, not links
    assert wheel.stat().st_size < 10e6, f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB"


def test_load_results_names_a_folder_that_is_not_a_result(tmp_path, monkeypatch):
    "A folder without runs.csv or meta.json gets an error naming the folder and the missing file."
    import bssn_book.results as results
    from bssn_book.evidence import load_results

    (tmp_path / "evidence" / "half").mkdir(parents=True)
    (tmp_path / "evidence" / "half" / "runs.csv").write_text("run,config,seed,collapsed,diverged\n")
    monkeypatch.setattr(results, "_root", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"half has no meta\.json"):
        load_results("half")
    with pytest.raises(FileNotFoundError, match="no result file or folder 'evidence/nothing'"):
        load_results("nothing")
