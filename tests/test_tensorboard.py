"""The trainer's TensorBoard logging (issue 13: claimed, untested): with `tensorboard` installed, every logged scalar
is written to <out>/tb/ at its step, and a resumed run continues the same curves without duplicates (purge_step)."""
import pytest
import torch

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from bssn_book.train import Trainer  # noqa: E402
from test_train import rows_of, tiny_config, tiny_data  # noqa: E402

torch.set_num_threads(1)


def scalars(out):
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_match_the_log_and_resume_continues_them(tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(out, iterations=4, log_every=2, checkpoint_every=2), data=tiny_data()).fit()
    rows = rows_of(out)
    tb = scalars(out)
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(tb)
    for key in ("loss_d", "loss_g"):
        logged = [(r["step"], r[key]) for r in rows]
        assert [s for s, _ in tb[key]] == [s for s, _ in logged]
        assert all(v == pytest.approx(w, rel=1e-6) for (_, v), (_, w) in zip(tb[key], logged))
    # resume to 8 iterations: the same curves go on, no step twice
    Trainer(tiny_config(out, iterations=8, log_every=2, checkpoint_every=2), data=tiny_data()).fit()
    tb = scalars(out)
    steps = [s for s, _ in tb["loss_d"]]
    assert steps == sorted(set(steps)) and steps[-1] == 8 and steps == [r["step"] for r in rows_of(out)]
