"benchmarks/run.py: its command line refuses counts it cannot compute medians and IQRs from, before any timing."
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run as bench  # noqa: E402

REAL_CLOCK_NOISE = bench.clock_noise


@pytest.fixture(autouse=True)
def keep_thread_count(monkeypatch):
    "main() sets torch's thread count for the whole process; here it must not (later tests compare float results)."
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(bench, "clock_noise", lambda device: [0.2, 0.25, 0.3])   # main()'s 12 s clock check


def test_clock_noise_times_each_repeat():
    times = REAL_CLOCK_NOISE(bench.torch.device("cpu"), repeats=4, n=64, calls=2)
    assert len(times) == 4 and all(t > 0 for t in times)


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "1"], "--repeats must be at least 2, got 1"),
    (["--repeats", "15", "1"], "--repeats must be at least 2, got 1"),
    (["--repeats", "3", "4", "5"], "--repeats takes one count or one per width (2), got 3"),
    (["--widths", "0.5", "--repeats", "3", "4"], "--repeats takes one count or one per width (1), got 2"),
    (["--norm-repeats", "1"], "--norm-repeats must be at least 2, got 1"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--widths", "0.5", "0.5"], "--widths: each width once, got 0.5 0.5"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--widths", "1.0", "0"], "--widths 0.0: CNNDiscriminator: width must be a positive number"),
    (["--widths", "nan"], "--widths nan: CNNDiscriminator: width must be a positive number"),
    (["--device", "bogus"], "--device bogus:"),
])
def test_bad_counts_are_usage_errors(argv, message, capsys, monkeypatch):
    "Every argument is checked before any timing: a bad one used to surface after minutes, or at the final write."
    monkeypatch.setattr(bench, "time_all", lambda *a, **k: pytest.fail("timing started despite a bad count"))
    with pytest.raises(SystemExit) as e:
        bench.main(argv + ["--out", "/nonexistent/never-written.json"])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    ([], {1.0: 25, 0.25: 45}), (["--widths", "0.25", "1.0"], {0.25: 45, 1.0: 25}), (["--widths", "0.5"], {0.5: 25}),
    (["--repeats", "7"], {1.0: 7, 0.25: 7}), (["--repeats", "3", "4"], {1.0: 3, 0.25: 4}),
])
def test_repeats_per_width(argv, expected, monkeypatch, tmp_path):
    "Each width gets its own count, by width (not by position) when defaulted; the result file records them."
    seen = {}

    def fake_time_all(width, device, repeats, steps, fn=None, seed=0):
        if fn is None:   # the D step (fn=weights_step: the normalization-only timing, its own count)
            seen[width] = repeats
        return ({v: 1.0 + i for i, v in enumerate(bench.VARIANTS)},
                {v: [1.0 + i] * repeats for i, v in enumerate(bench.VARIANTS)},
                {v: [1.0] * repeats for v in bench.VARIANTS})

    monkeypatch.setattr(bench, "time_all", fake_time_all)
    monkeypatch.setattr(bench, "peak_memory", lambda *a, **k: 0)
    bench.main(argv + ["--out", str(tmp_path / "out.json")])
    assert {float(w): n for w, n in json.loads((tmp_path / "out.json").read_text())["repeats"].items()} == expected
    assert seen == expected


def test_round_robin_times_every_call_in_a_fresh_order_each_repeat():
    "The shared timing loop: warm-up calls untimed, `steps` calls per repeat, the order reshuffled every repeat."
    log = []
    calls = {name: (lambda n=name: log.append(n)) for name in "abcd"}
    times = bench.round_robin(calls, repeats=6, steps=3, seed=1, warmup=2)
    assert log[:8] == [n for n in "abcd" for _ in range(2)]                        # warm-up, in order
    timed = log[8:]
    assert len(timed) == 6 * 4 * 3 and all(len(times[n]) == 6 for n in "abcd")
    orders = [tuple(timed[i:i + 12:3]) for i in range(0, len(timed), 12)]         # each repeat: 4 names x 3 calls
    assert all(sorted(o) == list("abcd") for o in orders) and len(set(orders)) > 1
    assert all(t >= 0 for x in times.values() for t in x)


def test_bootstrap_interval_of_a_ratio_of_medians():
    "Exact for an exact ratio; for noisy repeats it brackets the point estimate and widens with the noise."
    import random
    base = [1.0 + 0.01 * i for i in range(20)]
    lo, hi = bench.bootstrap_ci({"torch_sn": base, "sn": [1.1 * t for t in base]}, bench.ratio_of_medians("sn"))
    assert lo == pytest.approx(1.1) and hi == pytest.approx(1.1)   # the same draw for both: the ratio never moves
    rng = random.Random(3)
    widths = []
    for noise in (0.01, 0.2):
        t = {"torch_sn": [1 + rng.gauss(0, noise) for _ in range(40)], "sn": [1.02 + rng.gauss(0, noise) for _ in range(40)]}
        point = bench.ratio_of_medians("sn")(t)
        lo, hi = bench.bootstrap_ci(t, bench.ratio_of_medians("sn"))
        assert lo <= point <= hi
        assert (lo, hi) == bench.bootstrap_ci(t, bench.ratio_of_medians("sn"))   # seeded: reproducible
        widths.append(hi - lo)
    assert widths[1] > 5 * widths[0]
    none = [1 + rng.gauss(0, 0.2) for _ in range(40)]   # (sn - none) / (torch - none), each repeat shifted alike
    lo, hi = bench.bootstrap_ci({"none": none, "torch_sn": [x + 0.1 for x in none], "sn": [x + 0.05 for x in none]},
                                bench.overhead_ratio("sn"))
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    flat = {"none": [1.0, 1.0, 1.0], "torch_sn": [1.0, 1.0, 1.0], "sn": [1.5, 1.5, 1.5]}   # torch's cost invisible
    assert bench.overhead_ratio("sn")(flat) == float("inf") == bench.bootstrap_ci(flat, bench.overhead_ratio("sn"))[0]
    with pytest.raises(ValueError, match=r"same number of repeats, got \{'torch_sn': 2, 'sn': 1\}"):
        bench.bootstrap_ci({"torch_sn": [1.0, 2.0], "sn": [1.0]}, bench.ratio_of_medians("sn"))


def test_result_rows_carry_the_intervals(monkeypatch, tmp_path):
    "main() writes each step ratio's and each normalization-only ratio's 95% interval beside the point estimate."
    def fake_time_all(width, device, repeats, steps, fn=None, seed=0):
        raw = {v: [1.0 + i + 0.01 * (r % 3) for r in range(repeats)] for i, v in enumerate(bench.VARIANTS)}
        return {v: sorted(t)[len(t) // 2] for v, t in raw.items()}, raw, {v: [1.0] * repeats for v in bench.VARIANTS}

    monkeypatch.setattr(bench, "time_all", fake_time_all)
    monkeypatch.setattr(bench, "peak_memory", lambda *a, **k: 0)
    bench.main(["--widths", "0.25", "--repeats", "5", "--norm-repeats", "5", "--out", str(tmp_path / "out.json")])
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["clock"]["times_s"] == [0.2, 0.25, 0.3] and result["clock"]["median_s"] == 0.25
    for r in result["rows"]:
        lo, hi = r["ratio_ci95"]
        assert lo <= r["ratio_vs_torch_sn"] <= hi
    for r in result["normalization_only"]["rows"]:
        if r["variant"] == "none":
            assert r["overhead_ratio_ci95"] is None
        else:
            lo, hi = r["overhead_ratio_ci95"]
            assert lo <= r["overhead_ratio_vs_torch_sn"] <= hi


@pytest.mark.parametrize("argv, message", [(["--repeats", "1"], "--repeats must be at least 2, got 1"),
                                          (["--steps", "0"], "--steps must be at least 1, got 0")])
def test_train_quick_refuses_counts_it_cannot_compute_an_interval_from(argv, message, capsys, monkeypatch):
    import train_quick
    monkeypatch.setattr(train_quick, "time_all", lambda *a, **k: pytest.fail("timing started despite a bad count"))
    with pytest.raises(SystemExit) as e:
        train_quick.main(argv + ["--out", "/nonexistent/never-written.json"])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("script", ["run", "train_quick"])
def test_an_out_that_cannot_be_written_is_refused_before_timing(script, tmp_path, capsys, monkeypatch):
    mod = bench if script == "run" else __import__("train_quick")
    monkeypatch.setattr(mod, "time_all", lambda *a, **k: pytest.fail("timing started despite a bad --out"))
    (tmp_path / "a_file").write_text("x")
    for out, message in [(tmp_path, "is a folder"), (tmp_path / "a_file" / "r.json", "is not a writable folder")]:
        with pytest.raises(SystemExit) as e:
            mod.main(["--out", str(out)])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_profile_step_charges_every_operator_once_and_counts_the_normalization(tmp_path, monkeypatch):
    """benchmarks/profile_step.py: the parts of a step add up to the profiled step (every event charged once); the
    normalization's operators are counted exactly (the count the machine's noise does not touch): under
    parametrize.cached() the weights are computed once per step instead of once per forward (D(real), D(fake))."""
    import profile_step
    monkeypatch.setattr(profile_step.torch, "set_num_threads", lambda n: None)   # as keep_thread_count, for this module
    out = tmp_path / "p.json"
    profile_step.main(["--widths", "0.0625", "--steps", "1", "--rounds", "1", "--wall-repeats", "0",
                       "--variants", "none", "sn", "sn+cached", "bssn", "--out", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())["widths"][0]["rows"]}
    for r in rows.values():
        assert sum(r["parts_us"].values()) == pytest.approx(r["step_us"], rel=1e-6)
    assert rows["none"]["normalization_ops"] == 0 and rows["none"]["normalization_parts"] == []
    forward = {v: rows[v]["ops_per_step"]["forward: normalization"] for v in ("sn", "sn+cached", "bssn")}
    assert forward["sn"] == 2 * forward["sn+cached"] > 0      # two forwards per D step, or one computation cached
    assert forward["bssn"] > forward["sn"]                    # two power iterations per convolution
    assert "backward: ConvolutionBackward0" not in rows["sn"]["normalization_parts"]


def test_profile_step_needs_the_unnormalized_reference(tmp_path, capsys):
    import profile_step
    with pytest.raises(SystemExit) as e:
        profile_step.main(["--variants", "sn", "bssn", "--out", str(tmp_path / "p.json")])
    assert e.value.code == 2 and "'none' is the reference" in capsys.readouterr().err


def _three_copies_of_a_d(kind):
    """A small normalized CNN discriminator and two deep copies of it, a real and a fake batch, and the hinge D loss:
    the setup of the cached-step tests below."""
    import copy
    import torch.nn.functional as F
    from bssn_book.models import CNNDiscriminator
    from bssn_book.norms import apply_norm
    torch = bench.torch
    torch.manual_seed(0)
    D = CNNDiscriminator(in_channels=3, width=0.0625, resolution=32)
    apply_norm(D, kind, example_input=torch.zeros(1, 3, 32, 32) if kind == "strict" else None)
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    hinge = lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean()
    return (D, copy.deepcopy(D), copy.deepcopy(D)), real, fake, hinge


@pytest.mark.parametrize("kind", ["sn", "bssn", "strict"])
def test_a_cached_d_step_is_the_trainers_single_forward_step(kind):
    """profile_step's '+cached' variants: two forwards, D(real) and D(fake), under torch's parametrize.cached() give
    the loss, the gradients and the power-iteration buffers of one forward on the two batches concatenated (what
    bssn_book's Trainer does: one update per D step). Without cached() the two forwards update the buffers twice."""
    from torch.nn.utils import parametrize
    torch = bench.torch
    (D_cached, D_cat, D_twice), real, fake, hinge = _three_copies_of_a_d(kind)
    with parametrize.cached():
        loss_cached = hinge(D_cached(real), D_cached(fake))
    loss_cached.backward()
    out = D_cat(torch.cat([real, fake]))
    loss_cat = hinge(out[:4], out[4:])
    loss_cat.backward()
    hinge(D_twice(real), D_twice(fake)).backward()
    assert torch.allclose(loss_cached, loss_cat, rtol=1e-5)
    for (name, p), q in zip(D_cached.named_parameters(), D_cat.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name
    assert all(torch.equal(a, b) for a, b in zip(D_cached.buffers(), D_cat.buffers()))
    assert not all(torch.equal(a, b) for a, b in zip(D_twice.buffers(), D_cat.buffers()))


@pytest.mark.parametrize("kind", ["sn", "bssn"])
def test_a_cached_d_step_through_torch_compile_updates_once(kind):
    """The same through torch.compile (dynamo and AOTAutograd; the aot_eager backend, which compiles in seconds): one
    power-iteration update per cached step, equal to the single forward's to rounding (twice would move u by ~1e-2),
    and the same loss and gradients."""
    from torch.nn.utils import parametrize
    torch = bench.torch
    (D_compiled, D_cat, D_twice), real, fake, hinge = _three_copies_of_a_d(kind)
    C = torch.compile(D_compiled, backend="aot_eager")
    with parametrize.cached():
        loss = hinge(C(real), C(fake))
    loss.backward()
    out = D_cat(torch.cat([real, fake]))
    hinge(out[:4], out[4:]).backward()
    D_twice(real), D_twice(fake)
    assert torch.allclose(loss, hinge(out[:4], out[4:]), rtol=1e-5)
    for p, q in zip(D_compiled.parameters(), D_cat.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7)
    gap = lambda A, B: max(float((a - b).abs().max()) for a, b in zip(A.buffers(), B.buffers()))
    assert gap(D_compiled, D_cat) < 1e-6 < 1e-3 < gap(D_compiled, D_twice)


def _cached_ddp_worker(rank, port, out_dir):
    "Two DDP replicas of one D per rank: a cached two-forward step and the Trainer's one-forward step, 3 steps each."
    import os
    import copy
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.utils import parametrize
    from bssn_book.models import CNNDiscriminator
    from bssn_book.norms import apply_norm
    torch = bench.torch
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out = {}
        for kind in ("sn", "bssn"):
            torch.manual_seed(0)
            D = CNNDiscriminator(in_channels=3, width=0.0625, resolution=32)
            apply_norm(D, kind)
            D_cached, D_cat = D, copy.deepcopy(D)
            runs = {}
            for name, model in (("cached", D_cached), ("cat", D_cat)):
                ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=True)
                opt = torch.optim.Adam(ddp.parameters(), lr=1e-3, betas=(0.5, 0.999))
                gen = torch.Generator().manual_seed(10 + rank)   # different data on each rank
                for _ in range(3):
                    real, fake = torch.randn(4, 3, 32, 32, generator=gen), torch.randn(4, 3, 32, 32, generator=gen)
                    opt.zero_grad()
                    if name == "cached":
                        with parametrize.cached():
                            r, f = ddp(real), ddp(fake)
                    else:
                        o = ddp(torch.cat([real, fake]))
                        r, f = o[:4], o[4:]
                    (F.relu(1 - r).mean() + F.relu(1 + f).mean()).backward()
                    opt.step()
                runs[name] = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
            out[kind] = runs
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_cached_d_step_under_ddp_is_the_trainers_step(tmp_path):
    """Under DDP (2 processes, gloo): a cached D(real), D(fake) step gives, on both ranks, the weights and buffers of
    the Trainer's one-forward step after 3 optimizer steps (to rounding), and the ranks agree exactly."""
    import socket
    import time
    import torch.multiprocessing as mp
    dist = bench.torch.distributed
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(_cached_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=False,
                             start_method=method)
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail("DDP workers did not finish within 180 s")
    r0, r1 = (bench.torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for kind in ("sn", "bssn"):
        for name in ("cached", "cat"):
            assert all(bench.torch.equal(r0[kind][name][k], r1[kind][name][k]) for k in r0[kind][name]), (kind, name)
        cached, cat = r0[kind]["cached"], r0[kind]["cat"]
        for k in cat:
            assert bench.torch.allclose(cached[k], cat[k], rtol=1e-4, atol=1e-6), (kind, k)


def _x86_avx2():
    import platform
    from bssn_book.train import _has_avx2
    return platform.machine().lower() in ("x86_64", "amd64") and _has_avx2()


@pytest.mark.skipif(not _x86_avx2(), reason="numerics='avx2' needs an x86-64 CPU with AVX2")
def test_numerics_cost_times_both_variants_in_fresh_processes(tmp_path):
    "numerics_cost.py at tiny sizes: both variants timed, the capped one really capped, the ratio in its interval."
    import numerics_cost
    out = tmp_path / "numerics_cost.json"
    r = numerics_cost.main(["--repeats", "2", "--iterations", "2", "--warmup", "1", "--width", "0.0625",
                            "--batch-size", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    rows = {row["variant"]: row for row in r["rows"]}
    assert set(rows) == {"native", "avx2"} and rows["avx2"]["cpu_capability"] == "AVX2"
    assert all(len(row["s_per_it_all"]) == 2 and row["s_per_it"] > 0 for row in rows.values())
    lo, hi = r["ratio_ci95"]
    assert lo <= r["ratio_avx2_vs_native"] <= hi
    assert r["ratio_avx2_vs_native"] == rows["avx2"]["s_per_it"] / rows["native"]["s_per_it"]
    assert r["run"]["width"] == 0.0625 and r["iterations"] == 2 and "torch" in r and "machine" in r


@pytest.mark.parametrize("argv, message", [(["--repeats", "1"], "--repeats must be at least 2, got 1"),
                                          (["--iterations", "0"], "--iterations must be at least 1, got 0"),
                                          (["--threads", "0"], "--threads must be at least 1, got 0"),
                                          (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
                                          (["--width", "-1"], "--widths -1.0")])
def test_numerics_cost_refuses_bad_counts_before_timing(argv, message, capsys, monkeypatch):
    import numerics_cost
    monkeypatch.setattr(numerics_cost, "time_all", lambda *a, **k: pytest.fail("timing started despite a bad count"))
    with pytest.raises(SystemExit) as e:
        numerics_cost.main(argv + ["--out", "/tmp/never-written-numerics-cost.json"])
    assert e.value.code == 2 and message in capsys.readouterr().err
