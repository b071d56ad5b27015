"""The resource guard (:mod:`spikedeploy.resources`): the memory estimate against measured peaks,
refusals before any allocation (one line, exit 2, nothing written), the limit and its option.

Peaks are measured in fresh subprocesses (``VmHWM`` of a process that does one job); the
estimate is computed in the same subprocess just before the job, as the guard does."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from spikedeploy import api, resources
from spikedeploy.cli import main
from spikedeploy.errors import ConfigError, ResourceError

SPIKEDEPLOY = Path(sys.executable).with_name("spikedeploy")


def _one_error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("spikedeploy") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_env_limit(monkeypatch):
    monkeypatch.delenv(resources.ENV_VAR, raising=False)


# ---------------------------------------------------------------------------------------------
# the estimate against measured peaks
# ---------------------------------------------------------------------------------------------

_MEASURE = r"""
import json, os, resource, sys, tempfile
from spikedeploy import api, resources
job, T, N, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
loaded = api.build_model("sdt-test", timesteps=T)
if job == "export":
    est = resources.guard_model(loaded, "export", timesteps=T, max_memory=1000)
else:
    est = resources.guard_model(loaded, "verify", timesteps=T, num_inputs=N, max_memory=1000,
                                run_itemsizes=resources.verify_run_itemsizes(8, ("binary", "graded")))
before = resources.process_rss()
with tempfile.TemporaryDirectory() as d:
    if job == "export":
        api.export("sdt-test", target=target, output=os.path.join(d, "m." + target), timesteps=T)
    else:
        api.verify("sdt-test", timesteps=T, num_inputs=N)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a subprocess of a big test runner
# would report the runner's peak
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"estimate": est.total, "base": est.base, "before": before, "peak": peak}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("job, T, N, target", [
    ("export", 10, 0, "nir"),
    ("export", 200, 0, "onnx"),
    ("verify", 2, 16, ""),
])
def test_estimate_is_within_2x_of_the_measured_peak(job, T, N, target):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop(resources.ENV_VAR, None)
    proc = subprocess.run([sys.executable, "-c", _MEASURE, job, str(T), str(N), target or "-"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = m["estimate"] / m["peak"]
    # conservative (never below the peak) and not more than twice it (measured 1.2 - 1.5 quiet)
    assert 1.0 <= ratio <= 2.0, (m, ratio)
    grown = m["peak"] - m["before"]
    if grown > 200e6:  # the part that grows with T and N, where it dominates
        assert 1.0 <= (m["estimate"] - m["base"]) / grown <= 2.0, m


def test_estimate_is_linear_in_steps_and_inputs():
    loaded = api.build_model("sdt-test", timesteps=1)
    p = resources.step_bytes(loaded.module, loaded.input_shape)
    assert p > 4 * math.prod(loaded.input_shape)  # more than the input: every intermediate result
    e1 = resources.estimate_model_memory(loaded, "export", timesteps=100)
    e2 = resources.estimate_model_memory(loaded, "export", timesteps=1000)
    grown1, grown2 = e1.total - e1.base, e2.total - e2.base
    assert grown1 == int(resources.CAPTURE_FACTOR * resources.capture_held_samples(100) * 100 * p) and abs(grown2 / grown1 - 10) < 1e-6
    sizes = resources.verify_run_itemsizes(8, ("binary", "graded"))
    assert sizes == (8, 8) + (8,) * 7
    v = resources.estimate_model_memory(loaded, "verify", timesteps=4, num_inputs=64, run_itemsizes=sizes)
    runs = dict(v.parts)["9 reference runs (64 inputs x 4 steps)"]
    assert runs == int(resources.RUN_FACTOR * 64 * 4 * p * sum(sizes) / 4)
    assert v.total == v.base + max(b for _, b in v.parts)


def test_probe_counts_every_intermediate_result_once():
    class Toy(nn.Module):
        input_shape = (5, 7)

        def forward(self, x):
            y = x * 2.0  # a new tensor
            z = y.reshape(y.shape[0], y.shape[1], 35)  # a view: no new storage
            return z + 1.0  # a new tensor

    # the input, x * 2 and z + 1: three storages of 35 float32 per step and sample
    assert resources.step_bytes(Toy(), (5, 7)) == 3 * 35 * 4

    class NeedsThreeSteps(Toy):
        def forward(self, x):
            return x.reshape(3, x.shape[1], 35) * 2.0  # fails at T = 1

    assert resources.step_bytes(NeedsThreeSteps(), (5, 7), timesteps=3) == 2 * 35 * 4  # probed at T = 3
    assert resources.step_bytes(NeedsThreeSteps(), (5, 7), timesteps=1000) is None  # too long to probe


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


#: address-space cap of the refusal subprocesses: if the guard ever failed to refuse, they would get
#: a MemoryError instead of pulling the machine into its out-of-memory killer
_AS_LIMIT = 4 << 30


def _capped():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_AS_LIMIT, _AS_LIMIT))


def _needs_default_refusal():
    limit, _ = resources.default_memory_limit()
    if limit > 200e9:
        pytest.skip(f"this machine's default limit ({limit / 1e9:.0f} GB) would allow T = 100000")


def test_huge_T_is_refused_from_the_cli_with_one_line(tmp_path):
    _needs_default_refusal()
    env = dict(os.environ)
    env.pop(resources.ENV_VAR, None)
    t0 = time.time()
    proc = subprocess.run([str(SPIKEDEPLOY), "export", "-T", "100000", "--target", "onnx", "-o", "big.onnx"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, preexec_fn=_capped)
    wall = time.time() - t0
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "export of sdt-test at T = 100000 needs an estimated" in line and "--max-memory GB" in line
    assert "more than the limit of" in line and "use fewer time steps (-T)" in line
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert wall < 60, wall  # mostly the interpreter and torch imports; the refusal itself: below


_REFUSE = r"""
import json, sys, time
from spikedeploy import api, resources
from spikedeploy.errors import ResourceError
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
before, out = hwm(), []
for T in (100000, 10000):
    t0 = time.perf_counter()
    try:
        api.export("sdt-test", target="nir", output=sys.argv[1], timesteps=T)
        out.append([T, "exported"])
    except ResourceError as e:
        out.append([T, str(e), time.perf_counter() - t0])
print(json.dumps({"grown": hwm() - before, "results": out}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc for the peak RSS")
def test_huge_T_is_refused_in_the_api_quickly_without_allocating(tmp_path):
    _needs_default_refusal()
    env = dict(os.environ)
    env.pop(resources.ENV_VAR, None)
    proc = subprocess.run([sys.executable, "-c", _REFUSE, str(tmp_path / "big.nir")], capture_output=True,
                          text=True, timeout=120, env=env, preexec_fn=_capped)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    for T, msg, seconds in m["results"]:
        assert f"export of sdt-test at T = {T} needs an estimated" in msg and "GB" in msg
        assert seconds < 5, (T, seconds)  # build the model, probe one step, refuse
    assert m["grown"] < 300e6, m  # the peak did not grow with T (the T = 100000 capture needs ~250 GB)
    assert not (tmp_path / "big.nir").exists()
    assert ResourceError("x").exit_code == 2


def test_max_memory_option_refuses_and_raises_the_limit(tmp_path, capsys, no_env_limit):
    out = tmp_path / "m.onnx"
    assert main(["export", "-T", "20", "--target", "onnx", "-o", str(out), "--max-memory", "0.01"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "needs an estimated" in line and "limit of 10 MB (--max-memory 0.01)" in line
    assert not out.exists()
    assert main(["export", "-T", "20", "--target", "onnx", "-o", str(out), "--max-memory", "100"]) == 0
    assert out.is_file()
    capsys.readouterr()
    # verify, audit, inspect: refused before any work (no report folder)
    for cmd in (["verify", "-T", "4", "--inputs", "8", "--no-progress", "-o", str(tmp_path / "v")],
                ["audit", "-T", "4", "--inputs", "8", "-o", str(tmp_path / "a")],
                ["inspect", "-T", "4"]):
        assert main(cmd + ["--max-memory", "0.01"]) == 2, cmd
        line = _one_error_line(capsys.readouterr().err)
        assert f"{cmd[0]} of sdt-test at T = 4" in line and "--max-memory" in line, line
    assert not (tmp_path / "v").exists() and not (tmp_path / "a").exists()
    for bad in ("0", "-1", "nan", "inf"):
        assert main(["inspect", "--max-memory", bad]) == 2
        assert "--max-memory must be a positive number of GB" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as info:  # argparse: one line, exit 2
        main(["inspect", "--max-memory", "lots"])
    assert info.value.code == 2 and "invalid float value" in _one_error_line(capsys.readouterr().err)


def test_run_of_a_nir_file_is_guarded(tmp_path, capsys, no_env_limit):
    art = tmp_path / "m.nir"
    assert main(["export", "-T", "2", "--target", "nir", "-o", str(art)]) == 0
    x = np.random.default_rng(0).standard_normal((2, 64, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["run", "--target", "nir", str(art), "--input", str(tmp_path / "x.npy"), "--max-memory", "0.05",
                 "--no-progress", "-o", str(tmp_path / "y.npz")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run of" in line and "at T = 2 with 64 inputs needs an estimated" in line and "input file" in line
    assert not (tmp_path / "y.npz").exists()
    assert main(["run", "--target", "nir", str(art), "--input", str(tmp_path / "x.npy"), "--no-progress"]) == 0


def test_verify_takes_T_and_N_from_the_input_file_header(tmp_path, no_env_limit):
    np.save(tmp_path / "x.npy", np.zeros((3, 40, 3, 16, 16), np.float32))
    loaded = api.build_model("sdt-test", timesteps=1)
    sizes = resources.verify_run_itemsizes(8, ("binary",))
    est = resources.guard_model(loaded, "verify", timesteps=1, num_inputs=64, input_file=tmp_path / "x.npy",
                                run_itemsizes=sizes, max_memory=1000)
    assert est.what == "verify of sdt-test at T = 3 with 40 inputs"
    assert resources.npy_shape(tmp_path / "x.npy") == (3, 40, 3, 16, 16)
    # a header the loader would refuse (truncated data, not a .npy) is left to the loader
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    assert resources.npy_shape(tmp_path / "short.npy") is None
    assert resources.npy_shape(tmp_path / "junk.npy") is None
    assert resources.npy_shape(tmp_path / "missing.npy") is None


# ---------------------------------------------------------------------------------------------
# the limit
# ---------------------------------------------------------------------------------------------


def test_limit_default_option_and_environment(monkeypatch):
    monkeypatch.delenv(resources.ENV_VAR, raising=False)
    limit, origin = resources.memory_limit()
    total = resources.physical_memory()
    assert 0 < limit and (total is None or limit <= total // 2 + 1), (limit, origin)
    assert (limit, origin) == resources.default_memory_limit() or "available" in origin
    assert resources.memory_limit(2.5) == (2_500_000_000, "--max-memory 2.5")
    monkeypatch.setenv(resources.ENV_VAR, "3")
    assert resources.memory_limit() == (3_000_000_000, f"{resources.ENV_VAR} 3")
    assert resources.memory_limit(1) == (1_000_000_000, "--max-memory 1")  # the option wins
    monkeypatch.setenv(resources.ENV_VAR, "plenty")
    with pytest.raises(ConfigError, match="SPIKEDEPLOY_MAX_MEMORY_GB='plenty' is not a number"):
        resources.memory_limit()
    for bad in (0, -2, float("nan"), float("inf"), True, "3"):
        with pytest.raises(ConfigError, match="--max-memory must be a"):
            resources.memory_limit(bad)


def test_check_message_names_estimate_limit_and_option():
    est = resources.MemoryEstimate("export of m at T = 9", base=100_000_000,
                                   parts=(("capture (6 samples x 9 steps)", 2_400_000_000),), fix="use fewer time steps (-T)")
    assert est.total == 2_500_000_000 and est.growth == 2_400_000_000 + resources.PROCESS_MARGIN
    with pytest.raises(ResourceError) as info:
        resources.check(est, max_memory=1.5)
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 2
    assert msg.startswith("export of m at T = 9 needs an estimated 2.5 GB of memory (capture (6 samples x 9 steps) "
                          "2.4 GB, process 100 MB), more than the limit of 1.5 GB (--max-memory 1.5)")
    # the limit bounds what the command adds, not what the process already holds
    big = resources.MemoryEstimate("export of m at T = 1", base=20_000_000_000, parts=(("capture", 1_000_000),))
    assert resources.check(big, max_memory=1.0) is big
    assert "use fewer time steps (-T), or raise the limit with --max-memory GB" in msg
    assert resources.check(est, max_memory=3) is est
