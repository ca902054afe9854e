"""TrainConfig.numerics: the reproducible-numerics mode "avx2" (ATen, oneDNN and MKL capped at
AVX2, set in the environment before torch loads), the checks that refuse it where it cannot
hold, and the numerics fingerprint a run records (done.json, meta.json)."""
import json
import platform
import subprocess

import pytest
import torch

from bssn_book import train
from bssn_book.train import (NUMERICS, ConfigError, Trainer, check_numerics,
                             numerics_differences, numerics_env, numerics_fingerprint)
from test_train import PY, ROOT, child_env, tiny_config, tiny_data

torch.set_num_threads(1)
X86_AVX2 = platform.machine().lower() in ("x86_64", "amd64") and train._has_avx2()
needs_avx2 = pytest.mark.skipif(not X86_AVX2, reason="the mode needs an x86-64 CPU "
                                "with AVX2")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_numerics_env():
    assert numerics_env(None) == {} and numerics_env("avx2") == AVX2_ENV == NUMERICS["avx2"]
    numerics_env("avx2")["ATEN_CPU_CAPABILITY"] = "x"        # a copy: NUMERICS unchanged
    assert NUMERICS["avx2"]["ATEN_CPU_CAPABILITY"] == "avx2"
    with pytest.raises(ConfigError, match="numerics='avx512' \\(allowed: None, 'avx2'\\)"):
        numerics_env("avx512")


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_numerics_on_a_gpu_is_refused_by_validate(device):
    with pytest.raises(ConfigError, match="numerics='avx2' \\(allowed: None on a GPU"):
        tiny_config("x", numerics="avx2", device=device).validate()
    with pytest.raises(ConfigError, match="allowed: None on device"):
        check_numerics("avx2", device)


def test_unknown_mode_is_refused_by_validate():
    with pytest.raises(ConfigError, match="numerics='fast'"):
        tiny_config("x", numerics="fast").validate()
    assert train.TrainConfig.from_dict({"numerics": "none"}).numerics is None   # TOML


@needs_avx2
def test_in_process_trainer_without_the_environment_is_refused(tmp_path, monkeypatch):
    """This process was not started with the variables: the Trainer refuses to run and says
    what to set. Setting them now does not help where torch already chose its kernels
    (the capability ATen reports stays what it was)."""
    for k in AVX2_ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError) as e:
        Trainer(tiny_config(tmp_path, numerics="avx2"), data=tiny_data())
    msg = str(e.value)
    assert "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2" in msg
    assert "not in effect" in msg and "bssn-book train" in msg
    if torch.backends.cpu.get_cpu_capability() != "AVX2":   # a CPU beyond AVX2 (AVX-512)
        for k, v in AVX2_ENV.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(ConfigError, match="torch's CPU capability AVX512"):
            check_numerics("avx2")
    assert not (tmp_path / "done.json").exists()


def test_a_cpu_without_avx2_or_not_x86_is_refused(monkeypatch):
    monkeypatch.setattr(train, "_has_avx2", lambda: False)
    with pytest.raises(ConfigError, match="needs an x86-64 CPU with AVX2"):
        check_numerics("avx2")
    monkeypatch.setattr(train, "_has_avx2", lambda: True)
    monkeypatch.setattr(train.platform, "machine", lambda: "arm64")
    with pytest.raises(ConfigError, match="arm64 .*needs an x86-64 CPU with AVX2"):
        check_numerics("avx2")
    check_numerics(None)   # no mode: nothing to check anywhere


CHILD = """
import json, sys
from bssn_book.train import Trainer
from test_train import tiny_config, tiny_data
s = Trainer(tiny_config(sys.argv[1], iterations=6, numerics=sys.argv[2] or None),
            data=tiny_data()).fit()
print(json.dumps(s))
"""


def run_child(out, mode, env):
    p = subprocess.run([PY, "-c", CHILD, str(out), mode or ""], env={**child_env(), **env},
                       capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@needs_avx2
def test_a_process_started_with_the_environment_trains_and_records_it(tmp_path):
    a = run_child(tmp_path / "a", "avx2", AVX2_ENV)
    b = run_child(tmp_path / "b", "avx2", AVX2_ENV)
    fp = a["numerics"]
    assert fp["numerics"] == "avx2" and fp["cpu_capability"] == "AVX2"
    assert fp["env"] == AVX2_ENV and fp["threads"] == 1
    assert json.loads((tmp_path / "a" / "done.json").read_text())["numerics"] == fp
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["numerics"] == fp and meta["parts"] == [{"from_step": 0, "numerics": fp}]
    keys = ("loss_d", "loss_g", "d_real", "d_fake")
    assert [a[k] for k in keys] == [b[k] for k in keys]   # deterministic under the mode
    assert numerics_differences(fp, b["numerics"]) == []


def test_fingerprint_fields():
    fp = numerics_fingerprint()
    assert set(fp) == {"numerics", "torch", "mkl", "onednn", "cpu_capability", "env",
                       "machine", "cpu_vendor", "cpu_model", "threads"}
    assert fp["numerics"] is None and fp["torch"] == torch.__version__
    assert fp["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fp["machine"] == platform.machine() and fp["threads"] == torch.get_num_threads()
    config = torch.__config__.show()
    if "Math Kernel Library" in config:
        assert fp["mkl"] and fp["mkl"].split("-")[0].split()[0] in config
    if "MKL-DNN" in config or "oneDNN" in config:
        assert fp["onednn"].startswith("v") and fp["onednn"].split()[0][1:] in config
    assert numerics_fingerprint("avx2")["numerics"] == "avx2"


def test_numerics_differences():
    here = numerics_fingerprint()
    assert numerics_differences(here, dict(here)) == []
    other = dict(here, threads=here["threads"] + 1, cpu_model="another CPU")
    diff = numerics_differences(other, here)
    assert len(diff) == 2 and diff[0].startswith("cpu_model:") and "threads" in diff[1]
    # a pinned mode gives every CPU of the same kind of kernels: the model is not compared
    pinned = dict(here, numerics="avx2")
    assert numerics_differences(dict(pinned, cpu_model="another CPU"), pinned) == []
    assert numerics_differences(dict(pinned, cpu_vendor="GenuineIntel"), dict(
        pinned, cpu_vendor="AuthenticAMD"))[0].startswith("cpu_vendor:")
    assert numerics_differences(None, here) == ["no numerics fingerprint recorded"]
    assert numerics_differences({}, here) == ["no numerics fingerprint recorded"]


def test_meta_json_keeps_a_fingerprint_per_part_of_a_resumed_run(tmp_path):
    Trainer(tiny_config(tmp_path, iterations=4), data=tiny_data()).fit()
    Trainer(tiny_config(tmp_path, iterations=8), data=tiny_data()).fit()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert [p["from_step"] for p in meta["parts"]] == [0, 4]
    assert meta["numerics"] == meta["parts"][-1]["numerics"] == numerics_fingerprint()
