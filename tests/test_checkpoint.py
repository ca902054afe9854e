"""Checkpoints: atomic writes, loading that never runs code, damaged files, non-finite losses."""
import os
import pickle

import pytest
import torch

from bssn_book import train as T
from bssn_book.train import (CheckpointError, NonFiniteLossError, Trainer, list_checkpoints, load_checkpoint,
                             save_checkpoint)
from test_train import tiny_config, tiny_data

torch.set_num_threads(1)


def test_save_then_load_roundtrip_leaves_no_temp_file(tmp_path):
    state = {"step": 7, "w": torch.randn(3, 3), "nested": {"a": [1, 2.5, None, "x"], "t": (1, 2)}}
    p = save_checkpoint(tmp_path / "sub" / "c.pt", state)
    back = load_checkpoint(p)
    assert back["step"] == 7 and torch.equal(back["w"], state["w"]) and back["nested"] == state["nested"]
    assert os.listdir(tmp_path / "sub") == ["c.pt"]


def test_save_is_atomic_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()
    real_save = torch.save
    def broken_save(obj, f, *a, **k):   # writes part of the file, then the process "crashes"
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]


def test_save_fsyncs_file_and_folder_and_replaces(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b))[1])
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    kinds = [c[0] for c in calls]
    assert kinds == ["fsync", "replace", "fsync"]   # the file's data, the rename, the folder entry
    assert calls[1][1] == str(tmp_path / "c.pt")


class Evil:
    "Unpickling this calls `open(marker, 'w')`: a stand-in for any code a crafted file could run."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_crafted_checkpoint_does_not_run_code(tmp_path, how):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    obj = {"step": 1, "payload": Evil(str(marker))}
    if how == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "evil.pt" in str(e.value) and "weights_only=True" in str(e.value) and not marker.exists()


def test_truncated_or_missing_checkpoint_raises_a_clear_error(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", {"step": 1, "w": torch.randn(100, 100)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot load checkpoint .*cut.pt: the file is truncated or corrupt"):
        load_checkpoint(cut)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(out, iterations=8, checkpoint_every=4), data=tiny_data()).fit()
    ckpts = list_checkpoints(out / "checkpoints")
    assert [c.name for c in ckpts] == ["ckpt-00000004.pt", "ckpt-00000008.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])
    t = Trainer(tiny_config(out, iterations=10, checkpoint_every=4), data=tiny_data())
    with pytest.warns(UserWarning, match="ckpt-00000008.pt.*previous"):
        r = t.fit()
    assert t.resumed_from.name == "ckpt-00000004.pt" and r["status"] == "done" and r["step"] == 10
    assert (out / "checkpoints" / "ckpt-00000008.pt.corrupt").exists()
    assert load_checkpoint(out / "checkpoints" / "ckpt-00000008.pt")["step"] == 8   # rewritten, good this time


def test_nonfinite_loss_stops_with_the_loss_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    t = Trainer(tiny_config(out, iterations=20, checkpoint_every=5), data=tiny_data())
    def inject(module, args, output):   # D's output turns NaN during step 7
        return output * float("nan") if t.step == 6 else output
    t.D_raw.register_forward_hook(inject)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss_d \(nan\) at step 7.*ckpt-00000005.pt"):
        t.fit()
    assert [c.name for c in list_checkpoints(out / "checkpoints")] == ["ckpt-00000005.pt"]
    state = load_checkpoint(out / "checkpoints" / "ckpt-00000005.pt")
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["D"].values()
                                     if torch.is_tensor(v) and v.is_floating_point())   # not the norms' settings
    assert all(torch.isfinite(p).all() for p in t.D_raw.parameters())   # the NaN never reached an optimizer step
    assert not (out / "done.json").exists()


def test_nonfinite_generator_loss_is_named(tmp_path):
    t = Trainer(tiny_config(tmp_path / "g", iterations=5, checkpoint_every=0), data=tiny_data())
    calls = {"n": 0}
    def inject(module, args, output):   # D's 2nd forward in a step is the G step's
        calls["n"] += 1
        return output + float("inf") if calls["n"] == 4 else output
    t.D_raw.register_forward_hook(inject)
    with pytest.raises(NonFiniteLossError, match="non-finite loss_g .* at step 2.*no checkpoint"):
        t.fit()


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    out = tmp_path / "arch"
    Trainer(tiny_config(out, iterations=2), data=tiny_data()).fit()
    with pytest.raises(CheckpointError, match="another model: width"):
        Trainer(tiny_config(out, iterations=4, width=0.125), data=tiny_data()).fit()
