"""The Colab machinery (tools/colab_test.py) and the shared install cell (tools/install_cell.py).

The full run of every chapter is `make colab-test` (part of `make test`); here: the machinery fails on the two
mistakes it exists to catch, each shown on a tiny notebook, and every chapter's install cell is the shared one
with the extras its code needs.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_test  # noqa: E402
import install_cell  # noqa: E402

needs_base = pytest.mark.skipif(not colab_test.base_python().exists(),
                                reason=".venv-colab/ is not built (make colab-test builds it)")


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@needs_base
def test_the_machinery_fails_on_a_repository_path_and_an_uninstalled_package(tmp_path):
    # a notebook in nbs/ could read this file through "../experiments/..."; alone in Colab it is not there
    rel = "../experiments/evidence/config.json"
    assert (ROOT / "nbs" / rel).is_file()
    reads_repo = _notebook(tmp_path / "reads_repo.ipynb", f"open({rel!r}).read()")
    needs_fidelity = _notebook(tmp_path / "needs_fidelity.ipynb", "import torch_fidelity")
    imports_repo = _notebook(tmp_path / "imports_repo.ipynb",
                             f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bssn_book")
    fine = _notebook(tmp_path / "fine.ipynb", "import torch, sklearn, mlxtend, ipywidgets\n"
                     "assert ipywidgets.__version__ == '7.7.1', ipywidgets.__version__")
    results = {r["notebook"]: r for r in (colab_test.run_chapter(nb, None) for nb in
                                          (reads_repo, needs_fidelity, imports_repo, fine))}
    assert results["fine.ipynb"]["ok"], results["fine.ipynb"]["error"]
    assert not results["reads_repo.ipynb"]["ok"] and "FileNotFoundError" in results["reads_repo.ipynb"]["error"]
    assert not results["needs_fidelity.ipynb"]["ok"]
    assert "No module named 'torch_fidelity'" in results["needs_fidelity.ipynb"]["error"]
    assert not results["imports_repo.ipynb"]["ok"]
    assert "modules imported from the repository" in results["imports_repo.ipynb"]["error"]


@needs_base
def test_a_layer_installs_into_itself_and_keeps_the_base_torch(tmp_path):
    "pip in a throwaway layer sees the base's torch as installed: installing something that needs it swaps nothing."
    py = colab_test.make_layer(tmp_path / "layer")
    out = subprocess.run([py, "-m", "pip", "install", "--dry-run", "--no-deps", "--report", "-", "-q",
                          "torch==2.14.1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["install"] == []          # already installed: nothing to do
    where = subprocess.run([py, "-c", "import torch, sysconfig; print(torch.__file__); "
                                      "print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True)
    torch_file, purelib = where.stdout.split()
    assert torch_file.startswith(str(colab_test.site_packages(colab_test.base_python()))) and \
        purelib.startswith(str(tmp_path / "layer"))


def test_every_chapter_has_the_shared_install_cell():
    assert install_cell.differing() == [], "run `python tools/install_cell.py`"


def test_the_install_cell_reads_its_source_from_the_environment():
    text = install_cell.cell_text(["metrics"])
    assert 'repository = "git+https://github.com/' in text
    assert 'os.environ.get("BSSN_BOOK_PIP", repository)' in text
    assert '%pip install -q "bssn-book[metrics] @ {source}"' in text
    assert "import bssn_book, torch_fidelity" in text
    with pytest.raises(ValueError, match="unknown extras"):
        install_cell.cell_text(["gpu"])


def test_a_changed_install_cell_is_named(tmp_path):
    nb = json.loads((ROOT / "nbs" / "03_norms.ipynb").read_text())
    i, want, _ = install_cell.expected(ROOT / "nbs" / "03_norms.ipynb", nb)
    assert "import os\n" in want
    nb["cells"][i]["source"] = want.replace("import os\n", "import os  # edited\n")
    p = tmp_path / "03_norms.ipynb"
    p.write_text(json.dumps(nb))
    assert install_cell.differing([p]) == ["03_norms.ipynb"]
    install_cell.write([p])
    assert install_cell.differing([p]) == []


# What shows that a chapter uses an extra: the modules of the extra, or the package's functions that need them.
USES = {"metrics": r"\btorch_fidelity\b|\bcompute_metrics\(|\bbssn-book\s+eval\b|\[\s*[\"']eval[\"'],\s",
        "data": r"\bsklearn\b|\bmlxtend\b|\bPIL\b|\bload_mnist|\bload_digits|\bload_dataset\(|ImageFolderDataset"
                r"|\bload_cifar10|\bload_stl10",
        "docs": r"\bnbdev\b"}


@pytest.mark.parametrize("nb", sorted((ROOT / "nbs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_a_chapter_installs_the_extras_its_code_uses(nb):
    """An extra is listed when the chapter's own cells (not the `#| export` definitions, which may be never called
    there) use it, and only when its code mentions it at all."""
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"
             and not install_cell.is_install_cell("".join(c["source"]))]
    def uses(extra, cells):
        return any(re.search(USES[extra], "".join(c["source"])) for c in cells)
    run = [c for c in cells if not re.match(r"\s*#\|\s*export", "".join(c["source"]))]
    listed = set(install_cell.EXTRAS[nb.stem])
    needed = {e for e in USES if uses(e, run)}
    assert needed <= listed, f"{nb.name} uses {sorted(needed - listed)} in its cells; add to tools/install_cell.py's EXTRAS"
    unused = {e for e in listed if not uses(e, cells)}
    assert not unused, f"{nb.name} lists {sorted(unused)} in tools/install_cell.py's EXTRAS but its code never uses it"


def _names(path):
    lines = [l.split("#")[0].strip() for l in path.read_text().splitlines()]
    return {re.split(r"[=<>!~\[ ]", l)[0].lower(): l for l in lines if l and not l.startswith("-")}


KERNEL_PINS = {"ipykernel", "ipython", "jupyter-client"}   # Colab's kernel; Binder's JupyterLab needs ipykernel>=6.5


def test_binder_installs_the_colab_set_with_cpu_torch():
    colab, binder = _names(ROOT / "tools" / "colab_requirements.txt"), _names(ROOT / "binder" / "requirements.txt")
    assert set(binder) == set(colab) - {"ipython", "jupyter-client"}
    for name in ("torch", "torchvision"):
        assert binder[name] == colab[name] + "+cpu"
    assert binder["ipykernel"] == "ipykernel"                  # unpinned: Binder's JupyterLab picks a current one
    assert {n: l for n, l in binder.items() if n not in {"torch", "torchvision"} | KERNEL_PINS} == \
        {n: l for n, l in colab.items() if n not in {"torch", "torchvision"} | KERNEL_PINS}


def test_the_readme_shows_the_install_line_the_cells_run():
    line = next(l for l in install_cell.cell_text(["metrics", "data"]).splitlines() if "%pip" in l).strip()
    assert line.replace("{source}", "git+" + install_cell.repository_url()) in (ROOT / "README.md").read_text()
