"""The `bssn-book` command line: train, eval, sweep end to end on tiny configurations; one-line errors, exit 2."""
import csv
import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
import torch

from bssn_book import cli, train
from bssn_book.train import list_checkpoints, load_checkpoint
from test_train import ROOT, child_env

torch.set_num_threads(1)
TINY = ["width=0.0625", "z_dim=8", "batch_size=8", "log_every=1", "sample_every=0", "metrics_every=0",
        "checkpoint_every=2", "progress=false"]


def run_main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_eval_in_process(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_main(["train", "--preset", "quick", "--set", *TINY, "iterations=4", f"out_dir={out}"], capsys)
    assert code == 0, err
    r = json.loads(stdout.strip().splitlines()[-1])
    assert r["status"] == "done" and r["step"] == 4
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["width"] == 0.0625 and cfg["dataset"] == "mnist" and cfg["resolution"] == 16
    code, stdout, err = run_main(["eval", str(out / "checkpoints" / "ckpt-00000004.pt"), "--samples", "64",
                                  "--json", str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["step"] == 4 and m["fid"] > 0 and m["num_generated"] == 64 and "fid" in stdout


def test_train_from_toml_and_json_config_files(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "quick"\nnorm = "sn"\nscale = 1.2\nbetas = [0.5, 0.9]\nema = "none"\n')
    c = cli.make_config(config=toml, sets=cli.parse_sets(["iterations=7"]))
    assert (c.norm, c.scale, c.betas, c.ema, c.iterations, c.dataset) == ("sn", 1.2, (0.5, 0.9), None, 7, "mnist")
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"preset": "paper-cifar10", "n_dis": 5}))
    c = cli.make_config(config=js)
    assert (c.dataset, c.n_dis, c.iterations) == ("cifar10", 5, 400_000)
    (tmp_path / "bad.toml").write_text("norm = \n")
    code, _, err = run_main(["train", "--config", str(tmp_path / "bad.toml")], capsys)
    assert code == 2 and "cannot be parsed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, words", [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--set", "n_dis=0", "norm=xx"], "n_dis=0 (allowed: an integer >= 1)"),
    (["train", "--set", "widht=1"], "unknown TrainConfig field"),
    (["train", "--set", "novalue"], "key=value"),
    (["train", "--preset", "quick", "--config", "x.toml"], "not allowed with argument"),
    (["train", "--config", "missing.toml"], "does not exist"),
    (["eval", "missing.pt"], "does not exist"),
    (["sweep", "--out", "x", "--jobs", "0"], "--jobs"),
    (["sweep", "--out", "x", "--scales", "a,b"], "comma-separated list of float"),
    (["sweep", "--out", "x", "--settings", "ndis3"], "unknown setting 'ndis3'"),
    (["sweep", "--out", "x", "--kinds", "sn,foo"], "norm='foo'"),
    # a --set the sweep would replace without a word (its setting, or what it sweeps) is refused, naming it
    (["sweep", "--out", "x", "--settings", "ndis1,ndis5", "--set", "lr_g=2e-4"], "lr_g (set by --settings ndis1)"),
    (["sweep", "--out", "x", "--settings", "ndis5", "--set", "betas=[0.5,0.99]"], "betas (set by --settings ndis5)"),
    (["sweep", "--out", "x", "--set", "seed=3"], "seed (given by --seeds)"),
    (["sweep", "--out", "x", "--set", "scale=2"], "scale (given by --scales)"),
    (["frobnicate"], "invalid choice"),
    ([], "choose a command"),
])
def test_usage_errors_are_one_line_exit_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(argv, capsys)
    assert code == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("bssn-book: error: ")
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()   # nothing ran


def test_crafted_checkpoint_is_refused_by_eval(tmp_path, capsys):
    class Evil:
        def __reduce__(self): return (open, (str(tmp_path / "pwned"), "w"))
    torch.save({"step": 1, "x": Evil()}, tmp_path / "evil.pt")
    code, _, err = run_main(["eval", str(tmp_path / "evil.pt")], capsys)
    assert code == 1 and "evil.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content, why", [
    (b"hello\n", "not a PyTorch checkpoint file"),                       # any file, e.g. a text file
    (None, "not a bssn-book training checkpoint (missing G, config)"),   # a real torch.save of another dict
])
def test_eval_of_a_file_that_is_not_a_training_checkpoint(tmp_path, capsys, content, why):
    path = tmp_path / "other.pt"
    path.write_bytes(content) if content is not None else torch.save({"step": 3}, path)
    code, _, err = run_main(["eval", str(path)], capsys)
    assert code == 1 and why in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv, why", [
    (["sweep", "--kinds", ",", "--out", "x"], "expected at least one value"),
    (["train", "--config", "CFG"], "preset must be a name"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, argv, why):
    (tmp_path / "c.json").write_text(json.dumps({"preset": ["quick"]}))
    argv = [str(tmp_path / "c.json") if a == "CFG" else a for a in argv]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err


def test_sweep_runs_in_parallel_skips_done_and_resumes_unfinished(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--kinds", "sn,bssn", "--scales", "1.2", "--seeds", "0", "--jobs", "2", "--out", str(out),
            "--set", *TINY, "iterations=4"]
    base = cli.make_config("quick", sets=cli.parse_sets(TINY + ["iterations=4"])).to_dict()
    runs = dict(cli.sweep_runs(base, ["sn", "bssn"], [1.2], [0], None, out))
    assert list(runs) == ["sn-c1.2-seed0", "bssn-c1.2-seed0"]
    from bssn_book.train import Trainer
    Trainer(runs["sn-c1.2-seed0"]).fit()                                   # finished before the sweep
    Trainer(runs["bssn-c1.2-seed0"].replace(iterations=2)).fit()           # unfinished: stopped at step 2
    (out / "bssn-c1.2-seed0" / "done.json").unlink()
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err + stdout
    rows = {r["run"]: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["sn-c1.2-seed0"]["status"] == "skipped (done)"
    assert rows["bssn-c1.2-seed0"]["status"] == "done" and rows["bssn-c1.2-seed0"]["step"] == 4
    done = json.loads((out / "bssn-c1.2-seed0" / "done.json").read_text())
    assert done["resumed_from"].endswith("ckpt-00000002.pt")                # resumed, not restarted
    assert "run " in stdout and stdout.splitlines()[-1].startswith("bssn-c1.2-seed0")   # the summary table's last row
    assert load_checkpoint(list_checkpoints(out / "bssn-c1.2-seed0" / "checkpoints")[-1])["config"]["scale"] == 1.2
    code, stdout, _ = run_main(args, capsys)                                  # everything done: nothing runs
    assert code == 0 and stdout.count("skipped (done)") == 4                   # 2 progress lines + 2 table rows


def test_sweep_gives_each_run_its_share_of_the_cpus(tmp_path, capsys, monkeypatch):
    """--jobs 2 on 8 CPUs: each training process runs with 4 torch threads (read back from the runs' done.json and the
    summary); one run alone: all 8; threads set in the config wins; never more than torch's setting in the sweep. (available_cpus is patched: the share is computed by the
    sweep, the count is applied and recorded by each run's own process.)"""
    monkeypatch.setattr(cli, "available_cpus", lambda: 8)
    monkeypatch.setattr(cli.torch, "get_num_threads", lambda: 8)   # the sweep's own setting (this module pins 1)
    common = ["--scales", "1.0", "--seeds", "0", "--set", *TINY, "iterations=1"]
    code, _, err = run_main(["sweep", "--kinds", "sn,bssn", "--jobs", "2", "--out", str(tmp_path / "two"), *common],
                            capsys)
    assert code == 0, err
    for run in ("sn-c1-seed0", "bssn-c1-seed0"):
        assert json.loads((tmp_path / "two" / run / "done.json").read_text())["threads"] == 4
    assert [r["threads"] for r in json.loads((tmp_path / "two" / "summary.json").read_text())] == [4, 4]
    code, _, err = run_main(["sweep", "--kinds", "sn", "--jobs", "2", "--out", str(tmp_path / "one"), *common], capsys)
    assert code == 0, err    # one run: nothing runs beside it, so it gets all 8 whatever --jobs says
    assert json.loads((tmp_path / "one" / "sn-c1-seed0" / "done.json").read_text())["threads"] == 8
    code, _, err = run_main(["sweep", "--kinds", "sn", "--jobs", "2", "--out", str(tmp_path / "set"), *common,
                             "threads=3"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "set" / "sn-c1-seed0" / "done.json").read_text())["threads"] == 3
    monkeypatch.setattr(cli.torch, "get_num_threads", lambda: 1)   # OMP_NUM_THREADS=1 where the sweep runs: 1 each
    assert cli.thread_share(2, 2) == 1 and cli.thread_share(1, 5) == 1
    monkeypatch.setattr(cli.torch, "get_num_threads", lambda: 3)
    assert cli.thread_share(1, 5) == 3 and cli.thread_share(4, 5) == 2
    sweep_help = cli.build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()
    assert "equal share of this machine's CPUs" in " ".join(sweep_help.split())   # --help says so
    monkeypatch.setattr(cli.torch, "get_num_threads", lambda: 8)
    assert cli.thread_share(4, 2) == 8 // min(4, 2) == 4   # fewer runs than jobs: divided by the runs, not by --jobs
    flat = " ".join(sweep_help.split())
    assert "CPUs // min(jobs, number of runs in this sweep)" in flat and "CPUs // jobs," not in flat
    assert "a resumed run may get another thread count than its first part" in flat


def test_console_script_exit_code_and_one_line_error(tmp_path):
    exe = ROOT / ".venv" / "bin" / "bssn-book"
    if not exe.exists():
        pytest.skip("console script not installed in .venv")
    p = subprocess.run([str(exe), "train", "--set", "loss=l1"], capture_output=True, text=True, env=child_env(),
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "bssn-book: error: invalid TrainConfig: loss='l1' (allowed: 'hinge', 'ns', 'wgan')"]


def test_preset_files_match_the_presets():
    from bssn_book.train import PRESETS, preset
    files = sorted((ROOT / "experiments" / "configs").glob("*.toml"))
    assert sorted(f.stem for f in files) == sorted(PRESETS)
    for f in files:
        assert cli.make_config(config=f) == preset(f.stem), f.name


def test_a_later_sweep_into_the_same_folder_keeps_the_earlier_rows(tmp_path, capsys):
    "Two sweeps, one folder: one summary with both; a rerun replaces rows by name; an unreadable summary stops it early."
    out = tmp_path / "sweep"
    common = ["--scales", "1.2", "--seeds", "0", "--out", str(out), "--set", *TINY, "iterations=2"]
    assert run_main(["sweep", "--kinds", "sn", *common], capsys)[0] == 0
    first = json.loads((out / "summary.json").read_text())
    assert run_main(["sweep", "--kinds", "bssn", *common], capsys)[0] == 0
    rows = json.loads((out / "summary.json").read_text())
    assert [r["run"] for r in rows] == ["sn-c1.2-seed0", "bssn-c1.2-seed0"] and rows[0] == first[0]
    with open(out / "summary.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["sn-c1.2-seed0", "bssn-c1.2-seed0"]
    assert run_main(["sweep", "--kinds", "sn", *common], capsys)[0] == 0      # done: skipped, its time kept
    again = {r["run"]: r for r in json.loads((out / "summary.json").read_text())}
    assert again["sn-c1.2-seed0"]["status"] == "skipped (done)" and len(again) == 2
    assert again["sn-c1.2-seed0"]["time_s"] == first[0]["time_s"] > 0
    (out / "summary.json").write_text("{not json")
    code, stdout, err = run_main(["sweep", "--kinds", "ssn", *common], capsys)
    assert code == 2 and "summary.json is not a sweep summary" in err and len(err.strip().splitlines()) == 1
    assert not (out / "ssn-c1.2-seed0").exists() and (out / "summary.json").read_text() == "{not json"
    assert not list(out.glob(".*.tmp"))


def test_two_sweeps_into_one_folder_at_once_both_land_in_the_summary(tmp_path, monkeypatch):
    """The summary is read again and merged under a lock at the end, so a sweep running alongside loses no rows. Both
    sweeps finish together and each dawdles between reading and writing the summary: without the lock (checked by
    replacing it) one sweep's rows are lost."""
    import threading
    import time as _time
    together = threading.Barrier(2)

    def fake_run_one(name, cfg, log):
        together.wait(timeout=30)
        return {"status": "done", "step": 2, "time_s": 1.0}

    read = cli._earlier_summary

    def slow_read(out):
        rows = read(out)
        _time.sleep(0.3)
        return rows

    monkeypatch.setattr(cli, "_run_one", fake_run_one)
    monkeypatch.setattr(cli, "_earlier_summary", slow_read)
    base = cli.make_config("quick", sets=cli.parse_sets(TINY + ["iterations=2"])).to_dict()
    out = tmp_path / "sweep"
    sweeps = [cli.sweep_runs(base, [kind], [1.0], [0], None, out) for kind in ("sn", "bssn")]
    threads = [threading.Thread(target=cli.run_sweep, args=(runs,), kwargs=dict(out=out, log=lambda m: None))
               for runs in sweeps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["run"] for r in json.loads((out / "summary.json").read_text())) == ["bssn-c1-seed0", "sn-c1-seed0"]
    assert not list(out.glob(".summary.*.tmp"))


def test_summary_files_get_the_usual_permissions_and_bad_summaries_are_refused(tmp_path, monkeypatch):
    "Atomic writes keep the mode a new file gets (mkstemp's is owner-only); a summary that is no list of rows is refused."
    monkeypatch.setattr(cli, "_run_one", lambda name, cfg, log: {"status": "done", "step": 2, "time_s": 1.0})
    base = cli.make_config("quick", sets=cli.parse_sets(TINY + ["iterations=2"])).to_dict()
    out = tmp_path / "sweep"
    cli.run_sweep(cli.sweep_runs(base, ["sn"], [1.0], [0], None, out), out=out, log=lambda m: None)
    umask = os.umask(0); os.umask(umask)
    for f in ("summary.json", "summary.csv"):
        assert (out / f).stat().st_mode & 0o777 == 0o666 & ~umask, f
    for text in ("{}", "[1, 2]", '[{"no_run": 1}]', "null"):
        (out / "summary.json").write_text(text)
        with pytest.raises(cli.UsageError, match="is not a sweep summary"):
            cli.run_sweep([], out=out, log=lambda m: None)
        assert (out / "summary.json").read_text() == text                  # left as it was
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(cli.UsageError, match="--out .*a_file is a file"):
        cli.sweep_runs(base, ["sn"], [1.0], [0], None, tmp_path / "a_file")


def test_sweep_refuses_runs_that_would_share_a_folder():
    base = cli.make_config("quick", sets=cli.parse_sets(TINY)).to_dict()
    with pytest.raises(cli.UsageError, match="share one folder: sn-c1-seed0"):
        cli.sweep_runs(base, ["sn"], [1.0, 1.0], [0], None, "unused")


def test_a_summary_that_cannot_be_merged_at_the_end_loses_no_rows(tmp_path, monkeypatch):
    "The runs are done when the merge fails (here summary.csv has become a folder): the rows go to a file of their own."
    monkeypatch.setattr(cli, "_run_one", lambda name, cfg, log: {"status": "done", "step": 2, "time_s": 1.0})
    base = cli.make_config("quick", sets=cli.parse_sets(TINY + ["iterations=2"])).to_dict()
    out = tmp_path / "sweep"
    out.mkdir(); (out / "summary.csv").mkdir()
    with pytest.raises(cli.UsageError, match="could not merge this sweep's rows .* they are in .*summary-unmerged-"):
        cli.run_sweep(cli.sweep_runs(base, ["sn", "bssn"], [1.0], [0], None, out), out=out, log=lambda m: None)
    [kept] = out.glob("summary-unmerged-*.json")
    assert [r["run"] for r in json.loads(kept.read_text())] == ["sn-c1-seed0", "bssn-c1-seed0"]


# -- the numerics mode, the official loop, logit_scale and d_depth through --set ------------
X86_AVX2 = platform.machine().lower() in ("x86_64", "amd64") and train._has_avx2()
needs_avx2 = pytest.mark.skipif(not X86_AVX2, reason="numerics='avx2' needs an x86-64 CPU with AVX2")
NUMERICS_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@needs_avx2
def test_train_restarts_itself_with_the_numerics_environment(tmp_path, capsys, monkeypatch):
    """`bssn-book train --set numerics=avx2` from a process started without the variables:
    called from Python, the run happens in a child started with them (exit code passed on);
    the run records the capped capability. Once started with them, nothing restarts."""
    for k in NUMERICS_VARS:
        monkeypatch.delenv(k, raising=False)
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--set", *TINY, "iterations=2", "numerics=avx2",
                             f"out_dir={out}"], capsys)
    assert code == 0, err
    fp = json.loads((out / "done.json").read_text())["numerics"]
    assert fp["numerics"] == "avx2" and fp["cpu_capability"] == "AVX2"
    assert {k: fp["env"][k] for k in NUMERICS_VARS} == cli.numerics_env("avx2")
    assert cli._RESTARTED not in os.environ
    # a refusal the environment cannot cure is not restarted: a GPU device
    code, _, err = run_main(["train", "--set", "numerics=avx2", "device=cuda"], capsys)
    assert code == 2 and "numerics='avx2' (allowed: None on a GPU" in err


@needs_avx2
def test_console_script_replaces_itself_with_the_numerics_environment(tmp_path):
    "From the shell the train command execs itself (same pid): the run sees the capped CPU."
    exe = ROOT / ".venv" / "bin" / "bssn-book"
    if not exe.exists():
        pytest.skip("console script not installed in .venv")
    env = {k: v for k, v in child_env().items() if k not in NUMERICS_VARS}
    p = subprocess.run([str(exe), "train", "--set", *TINY, "iterations=2", "numerics=avx2",
                        f"out_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["numerics"]["cpu_capability"] == "AVX2"


@needs_avx2
def test_sweep_children_get_the_numerics_environment(tmp_path, capsys, monkeypatch):
    for k in NUMERICS_VARS:
        monkeypatch.delenv(k, raising=False)
    code, _, err = run_main(["sweep", "--kinds", "sn", "--out", str(tmp_path / "s"), "--set",
                             *TINY, "iterations=2", "numerics=avx2"], capsys)
    assert code == 0, err
    fp = json.loads((tmp_path / "s" / "sn-c1-seed0" / "done.json").read_text())["numerics"]
    assert fp["numerics"] == "avx2" and fp["cpu_capability"] == "AVX2"


def test_official_loop_logit_scale_and_depth_through_set(tmp_path, capsys):
    sets = ["loop=official", "logit_scale=2.5", "d_depth=12"]
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--set", *TINY, "iterations=2", *sets, f"out_dir={out}"],
                            capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["loop"], cfg["logit_scale"], cfg["d_depth"]) == ("official", 2.5, 12)
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert all(k in rows[-1] for k in ("grad_slope/D", "logit_spread/D", "margin_frac/D"))
    code, _, err = run_main(["sweep", "--kinds", "sn,bssn", "--out", str(tmp_path / "s"), "--set",
                             *TINY, "iterations=2", *sets, "d_depth=16"], capsys)
    assert code == 0, err
    for run in ("sn-c1-seed0", "bssn-c1-seed0"):
        cfg = json.loads((tmp_path / "s" / run / "config.json").read_text())
        assert (cfg["loop"], cfg["logit_scale"], cfg["d_depth"]) == ("official", 2.5, 16)
        assert load_checkpoint(list_checkpoints(tmp_path / "s" / run / "checkpoints")[-1])[
            "config"]["d_depth"] == 16
    for bad, words in [("loop=tf", "loop='tf'"), ("logit_scale=0", "logit_scale=0"),
                       ("d_depth=10", "d_depth=10"), ("numerics=avx9", "numerics='avx9'")]:
        code, _, err = run_main(["train", "--set", bad], capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
