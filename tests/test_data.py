"""bssn_book.data: embedded data, CIFAR-10 (real pickle format, safe unpickling), STL-10 binary, image folders, loaders."""
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from bssn_book import data as Dt

torch.set_num_threads(1)


# --- files in the real formats, generated -------------------------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    "bytes as Python 2 str opcodes, like the original CIFAR-10 batches (written by cPickle, protocol 2)."
    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_bytes


def write_batch(path, images, labels, batch_label):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump({b"batch_label": batch_label, b"labels": [int(v) for v in labels],
                                       b"data": images.reshape(len(images), 3072),
                                       b"filenames": [b"img_%d.png" % i for i in range(len(images))]})
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    path.write_bytes(raw)


@pytest.fixture
def cifar_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ref = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs = rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, 7)
        write_batch(folder / name, imgs, labels, f"{name} of 6".encode())
        ref[name] = (imgs, labels)
    return tmp_path, ref


def test_cifar_real_format(cifar_root):
    root, ref = cifar_root
    raw = (root / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    ds = Dt.load_cifar10(root)
    assert len(ds) == 35 and ds.shape == (35, 3, 32, 32)
    imgs = np.concatenate([ref[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([ref[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert torch.equal(ds.labels, torch.from_numpy(labels))
    x = ds.tensor()
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.allclose((x + 1) * 127.5, torch.from_numpy(imgs).float(), atol=1e-3)
    assert torch.allclose(ds[3], x[3]) and ds[[1, 2]].shape == (2, 3, 32, 32)
    test = Dt.load_cifar10(root / "cifar-10-batches-py", train=False)
    assert torch.allclose((test.tensor() + 1) * 127.5, torch.from_numpy(ref["test_batch"][0]).float(), atol=1e-3)


def test_cifar_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Dt.load_cifar10(tmp_path / "nope")
    msg = str(e.value)
    assert str(tmp_path / "nope" / "cifar-10-batches-py") in msg and "data_batch_1" in msg
    assert "cifar-10-python.tar.gz" in msg and "download=True" in msg


def test_cifar_one_batch_missing(cifar_root):
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        Dt.load_cifar10(root)
    assert len(Dt.load_cifar10(root, train=False)) == 7


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_refused_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    payload = pickle.dumps({"data": _Evil(marker)}, protocol=protocol)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError) as e:
        Dt.load_cifar10(tmp_path)
    assert "system" in str(e.value) and "data_batch_1" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen"),
                                    ("numpy.core.multiarray", "scalar"), ("builtins", "getattr")])
def test_other_globals_refused(tmp_path, target):
    raw = b"\x80\x02c" + f"{target[0]}\n{target[1]}\n".encode() + b"X\x01\x00\x00\x00x\x85R."
    p = tmp_path / "x.pkl"
    p.write_bytes(raw)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        Dt.safe_unpickle(p)


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)   # C x H x W, row-major
    np.swapaxes(imgs, 2, 3).tofile(folder / "train_X.bin")          # STL-10 stores every channel column-major
    np.array([1, 10, 3, 4, 5], np.uint8).tofile(folder / "train_y.bin")
    np.swapaxes(imgs[:2], 2, 3).tofile(folder / "unlabeled_X.bin")
    ds = Dt.load_stl10(tmp_path, split="train")
    assert len(ds) == 5 and ds.shape == (5, 3, 96, 96)
    assert torch.allclose((ds.tensor() + 1) * 127.5, torch.from_numpy(imgs).float(), atol=1e-3)
    assert ds.labels.tolist() == [0, 9, 2, 3, 4]
    un = Dt.load_stl10(folder)
    assert len(un) == 2 and un.labels is None
    small = Dt.load_stl10(tmp_path, split="unlabeled", size=48)
    assert small[0].shape == (3, 48, 48) and small.shape == (2, 3, 48, 48)
    with pytest.raises(FileNotFoundError, match="test_X.bin"):
        Dt.load_stl10(tmp_path, split="test")
    with pytest.raises(ValueError, match="split"):
        Dt.load_stl10(tmp_path, split="val")


def test_image_folder(tmp_path):
    from PIL import Image
    (tmp_path / "sub").mkdir()
    a = np.zeros((218, 178, 3), np.uint8)
    a[:20] = 255                     # a white band at the top: cropped away by the center crop
    a[99:119, 79:99] = (0, 0, 255)   # a blue square at the center
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(a).save(tmp_path / "sub" / "b.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = Dt.ImageFolderDataset(tmp_path, size=64)
    assert len(ds) == 2 and [p.name for p in ds.files] == ["a.png", "b.jpg"]
    x = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert x[2, 32, 32] > 0.95 and x[0, 32, 32] < -0.95     # blue at the center
    assert (x[:, 0] < -0.9).all()                             # the white band is outside the square crop
    assert Dt.ImageFolderDataset(tmp_path, size=16, channels=1)[1].shape == (1, 16, 16)
    batch = next(iter(Dt.make_loader(ds, 2, shuffle=False)))
    assert batch.shape == (2, 3, 64, 64)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a folder"):
        Dt.ImageFolderDataset(tmp_path / "missing", size=64)
    with pytest.raises(FileNotFoundError, match="no image files"):
        Dt.ImageFolderDataset(tmp_path, size=64)


def test_digits8():
    x, y = Dt.load_digits8(return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1 and y.max() == 9
    assert Dt.load_digits8(size=16).shape == (1797, 1, 16, 16)


def test_mnist_embedded():
    x, y = Dt.load_mnist_embedded(32)
    assert x.shape == (5000, 1, 32, 32) and x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.bincount(y).tolist() == [500] * 10
    assert torch.equal(Dt.load_mnist(28), x[:, :, 2:30, 2:30])
    assert Dt.load_mnist(32, resize=True).shape == (5000, 1, 32, 32)
    assert Dt.load_mnist(16).shape == (5000, 1, 16, 16)
    with pytest.raises(ValueError, match="size"):
        Dt.load_mnist(0)


def test_gaussian_mixture():
    x, c = Dt.gaussian_mixture("ring", 800, seed=0)
    assert x.shape == (800, 2) and c.shape == (8, 2) and x.dtype == torch.float32
    assert torch.allclose(c.norm(dim=1), torch.full((8,), 2.0))
    assert (torch.cdist(x, c).min(1).values < 0.02 * 5).all()
    x2, c2, k = Dt.gaussian_mixture("grid", 2500, std=0.1, seed=5, return_labels=True)
    assert c2.shape == (25, 2) and set(c2[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert abs((x2 - c2[k]).std().item() - 0.1) < 0.01
    assert torch.equal(Dt.gaussian_mixture("grid", 10, seed=1)[0], Dt.gaussian_mixture("grid", 10, seed=1)[0])
    assert not torch.equal(Dt.gaussian_mixture("grid", 10, seed=1)[0], Dt.gaussian_mixture("grid", 10, seed=2)[0])
    with pytest.raises(ValueError, match="kind"):
        Dt.gaussian_mixture("spiral")
    for bad in ("x", -0.1, True):
        with pytest.raises(ValueError, match="std must be a positive number"):
            Dt.gaussian_mixture("ring", 10, std=bad)


def test_make_loader_seeded_and_distributed():
    a = torch.arange(12.0).view(12, 1, 1, 1)
    flat = lambda loader: torch.cat([b.flatten() for b in loader]).tolist()
    assert flat(Dt.make_loader(a, 4, seed=3)) == flat(Dt.make_loader(a, 4, seed=3))
    assert flat(Dt.make_loader(a, 4, seed=3)) != flat(Dt.make_loader(a, 4, seed=4))
    assert flat(Dt.make_loader(a, 5, shuffle=False)) == list(range(10))
    shards = [Dt.make_loader(a, 2, distributed=True, num_replicas=3, rank=r, seed=0) for r in range(3)]
    assert all(isinstance(s.sampler, torch.utils.data.DistributedSampler) for s in shards)
    got = [flat(s) for s in shards]
    assert sorted(sum(got, [])) == list(range(12))
    shards[0].sampler.set_epoch(1)
    assert flat(shards[0]) != got[0] or len(got[0]) <= 1
    with pytest.raises(ValueError, match="batch_size"):
        Dt.make_loader(a, 0)


def test_download_offline_gives_file_not_found(tmp_path, monkeypatch):
    calls = []

    def no_network(url, timeout=None):
        calls.append(url)
        raise OSError("network is unreachable")
    monkeypatch.setattr(Dt.urllib.request, "urlopen", no_network)
    with pytest.raises(FileNotFoundError) as e:
        Dt.load_cifar10(tmp_path, download=True)
    assert calls == [Dt.CIFAR10_URL] and Dt.CIFAR10_URL in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="stl10_binary"):
        Dt.load_stl10(tmp_path, download=True)
    assert calls[-1] == Dt.STL10_URL
    calls.clear()
    with pytest.raises(FileNotFoundError):
        Dt.load_cifar10(tmp_path)
    assert calls == []


def test_download_extracts_archive(tmp_path, monkeypatch):
    import tarfile
    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    imgs = np.zeros((2, 3, 32, 32), np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(src / name, imgs, [0, 1], name.encode())
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="cifar-10-batches-py")
    monkeypatch.setattr(Dt.urllib.request, "urlopen", lambda url, timeout=None: open(archive, "rb"))
    ds = Dt.load_cifar10(tmp_path / "data", download=True)
    assert len(ds) == 10 and (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").is_file()


def test_imports_are_light():
    "models/losses/data import without norms (lazy in build_discriminator) and without sklearn, PIL or mlxtend."
    import subprocess
    import sys
    code = ("import sys, bssn_book.models, bssn_book.losses, bssn_book.data; "
            "heavy = [m for m in ('bssn_book.norms', 'sklearn', 'PIL', 'mlxtend', 'matplotlib') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
