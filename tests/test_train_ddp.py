"""Training under `torchrun --nproc_per_node 2` on CPU (gloo): rank 0 alone writes, and the networks, including
the power-iteration vectors of the normalization, stay identical across the two processes."""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from test_train import ROOT, child_env, rows_of
from bssn_book.train import list_checkpoints, load_checkpoint

TORCHRUN = ROOT / ".venv" / "bin" / "torchrun"

SCRIPT = """
import json, os, sys, torch
from test_train import tiny_config, tiny_data
from bssn_book.train import Trainer
out, extra = sys.argv[1], json.loads(sys.argv[2])
t = Trainer(tiny_config(out, iterations=6, checkpoint_every=3, batch_size=8, norm="bssn", ema=0.9, **extra), data=tiny_data())
assert t.world == 2 and t.batch == 4 and type(t.D).__name__ == "DistributedDataParallel"
r = t.fit()
state = {"D": t.D_raw.state_dict(), "G": t.G_raw.state_dict(), "G_ema": t.G_ema.state_dict(), "summary_step": r["step"]}
torch.save(state, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available(), reason="torchrun/gloo not available")
@pytest.mark.parametrize("extra", [{}, {"loss": "wgan", "gp_weight": 10.0, "gamma": "shared"}], ids=["hinge", "wgan-gp"])
def test_torchrun_two_processes_gloo(tmp_path, extra):
    "Also with the gradient penalty, whose double backward runs on the unwrapped D inside DDP's step."
    script, out = tmp_path / "ddp_train.py", tmp_path / "run"
    script.write_text(SCRIPT)
    out.mkdir()
    p = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(out), json.dumps(extra)],
                       capture_output=True, text=True, env=child_env(), cwd=str(ROOT), timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s0, s1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert s0["summary_step"] == s1["summary_step"] == 6
    for net in ("D", "G", "G_ema"):
        assert s0[net].keys() == s1[net].keys()
        for k in s0[net]:
            x, y = s0[net][k], s1[net][k]   # tensors, and the normalizations' settings (extra state)
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y, (net, k)
    vectors = [k for k in s0["D"] if k.endswith(("_u", "_v", "u", "v")) or "_u" in k or "_v" in k]
    assert vectors, list(s0["D"])            # the normalization's persistent vectors are among the compared
    # rank 0 alone writes: one row per step, one set of checkpoints, one done marker
    assert [r["step"] for r in rows_of(out)] == [1, 2, 3, 4, 5, 6]
    assert all(("gp" in r) == bool(extra.get("gp_weight")) for r in rows_of(out))   # the penalty ran (and only then)
    assert [c.name for c in list_checkpoints(out / "checkpoints")] == ["ckpt-00000003.pt", "ckpt-00000006.pt"]
    assert json.loads((out / "done.json").read_text())["step"] == 6
    state = load_checkpoint(out / "checkpoints" / "ckpt-00000006.pt")
    assert state["world_size"] == 2
    for k in s0["D"]:
        x = s0["D"][k]
        assert torch.equal(state["D"][k], x) if torch.is_tensor(x) else state["D"][k] == x
    tb = ["tb"] if importlib.util.find_spec("tensorboard") else []   # the trainer logs there when it can
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoints", "config.json", "done.json", "log.csv", "log.jsonl", "meta.json", "rank0.pt", "rank1.pt"] + tb)
