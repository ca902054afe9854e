"""Packaging: `pip install .` gives a wheel named bssn-book that works outside the source tree."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["matplotlib", "ipywidgets", "torch_fidelity", "torchvision", "sklearn", "mlxtend",
         "nbdev", "fastcore", "IPython", "tqdm", "scipy", "pandas"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=out)
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)
    return target


def run_outside(target, code):
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run([sys.executable, "-c", code], cwd=target.parent, env=env,
                          capture_output=True, text=True)


def test_wheel_name_and_contents(wheel):
    assert wheel.name.startswith("bssn_book-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bssn_book/norms.py" in names and "bssn_book/spectral.py" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Name: bssn-book" in text
    core = [l for l in text.splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l]
    assert sorted(l.split()[1].split(">")[0].split("=")[0] for l in core) == ["numpy", "torch"], core
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bssn-book = bssn_book.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_import_from_wheel_outside_source_tree(installed):
    res = run_outside(installed, "import bssn_book, bssn_book.norms as n; print(bssn_book.__file__); "
                                 "print(n.apply_norm.__module__)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith(str(installed)), res.stdout


def test_norms_needs_only_torch(installed):
    # torch itself may import some of these (torch 2.14 imports tqdm when it is installed): what counts is
    # what importing our modules adds on top of `import torch`.
    code = ("import sys, torch; before = set(sys.modules); import bssn_book.norms, bssn_book.spectral; "
            f"print([m for m in {HEAVY!r} if m in sys.modules and m not in before])")
    res = run_outside(installed, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_assets_in_wheel(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "bssn_book/assets/mnist_classifier.pt" in names, names


def test_console_script(installed):
    script = installed / "bin" / "bssn-book"
    assert script.exists()
    env = dict(os.environ, PYTHONPATH=str(installed))
    res = subprocess.run([sys.executable, str(script), "--help"], env=env, capture_output=True,
                         text=True, cwd=installed.parent)
    assert res.returncode == 0, res.stderr
    for cmd in ("train", "eval", "sweep"):
        assert cmd in res.stdout
