"""Tests for spikedeploy.lava_compat: the Python 3.11 import fix for lava-nc 0.10.0, and tiny Lava
networks run in the CPU simulator with hand-computed expected spikes and voltages.

Lava timing used below (read off lava-nc 0.10.0's process models):
- a source RingBuffer sends column t-1 of its data at time step t (steps count from 1);
- Dense/Conv send at step t what they accumulated at step t-1 (a one-step delay, zero at t=1);
- LIF (floating_pt): u = u*(1-du) + a_in; v = v*(1-dv) + u + bias; spike if v > vth; v = 0 on spike;
- LIF (fixed_pt): the same in integers with a_in << 6, vth << 6, bias_mant << bias_exp (bias not
  shifted by 6), decays du/dv in units of 1/4096, and an extra +1 on du (du=4095 clears u).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from dataclasses import fields

import numpy as np
import pytest

from spikedeploy import lava_compat

run_configs, run_conditions = lava_compat.import_lava()

from lava.magma.compiler import var_model  # noqa: E402  (needs the hook installed above)
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as Sink  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402
from lava.proc.lif.process import LIF  # noqa: E402
from lava.proc.monitor.process import Monitor  # noqa: E402


# --------------------------------------------------------------------------------------------
# The import hook
# --------------------------------------------------------------------------------------------

def test_patched_module_has_fresh_encoder_per_instance():
    first, second = var_model.CoreEncoder(), var_model.CoreEncoder()
    assert isinstance(first.x, var_model.ByteEncoder)
    assert first.x is not second.x
    assert first.x is not first.y
    first.x.base = 7
    assert second.x.base == 0
    for cls in (var_model.CoreEncoder, var_model.ChipEncoder, var_model.AxonEncoder):
        for f in fields(cls):
            assert f.default_factory is var_model.ByteEncoder, (cls.__name__, f.name)


def test_patched_module_keeps_file_and_line_numbers():
    assert isinstance(var_model.__spec__.loader, lava_compat._PatchingLoader)
    assert var_model.__file__ == var_model.__spec__.origin
    with open(var_model.__file__, encoding="utf-8") as handle:
        original = handle.read()
    patched = lava_compat.patch_source(original, var_model.__file__)
    assert patched.count("\n") == original.count("\n")
    assert "= ByteEncoder()" not in patched
    assert patched.count("field(default_factory=ByteEncoder)") == 8  # CoreEncoder 3, Chip 3, Axon 2


def test_install_is_idempotent():
    lava_compat.install()
    lava_compat.install()
    hooks = [f for f in sys.meta_path if isinstance(f, lava_compat._VarModelFinder)]
    assert len(hooks) == 1


def test_unknown_source_raises_naming_file_and_pattern():
    with pytest.raises(lava_compat.LavaCompatError) as info:
        lava_compat.patch_source("class CoreEncoder:\n    x: int = 0\n", "/some/var_model.py")
    message = str(info.value)
    assert "/some/var_model.py" in message and "ByteEncoder" in message


def test_missing_import_line_raises():
    source = "@dataclass\nclass C:\n    x: ByteEncoder = ByteEncoder()\n"
    with pytest.raises(lava_compat.LavaCompatError, match="from dataclasses import"):
        lava_compat.patch_source(source, "var_model.py")


def test_missing_lava_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "lava", None)  # makes `import lava` fail
    with pytest.raises(ImportError, match="--ignore-requires-python"):
        lava_compat.install()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_fresh_interpreter_needs_and_gets_the_fix():
    # Without the hook, Python 3.11 refuses the module (the bug this module exists for) ...
    plain = _python("import lava.magma.compiler.var_model")
    assert plain.returncode != 0 and "default_factory" in plain.stderr
    # ... and with it, Lava's core and compiler import in a clean interpreter.
    fixed = _python("""
        from spikedeploy import lava_compat
        configs, conditions = lava_compat.import_lava()
        from lava.magma.compiler.compiler import Compiler
        print(configs.Loihi2SimCfg.__name__, conditions.RunSteps.__name__)
    """)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.split() == ["Loihi2SimCfg", "RunSteps"]


def test_start_method_clash_is_explained():
    clash = _python("""
        import multiprocessing
        multiprocessing.set_start_method("spawn")
        from spikedeploy import lava_compat
        lava_compat.import_lava()
    """)
    assert clash.returncode != 0
    assert "LavaCompatError" in clash.stderr and "import_lava() before" in clash.stderr


def test_start_method_already_fork_is_accepted():
    """tqdm (e.g. inside torch.fx during capture) fixes the start method to 'fork' before Lava is
    imported; Lava's own set_start_method('fork') must then not fail."""
    ok = _python("""
        import multiprocessing
        multiprocessing.set_start_method("fork")
        from spikedeploy import lava_compat
        lava_compat.import_lava()
        print(multiprocessing.get_start_method(), multiprocessing.set_start_method.__module__)
    """)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["fork", "multiprocessing.context"]  # the original is restored


# --------------------------------------------------------------------------------------------
# Tiny networks in the CPU simulator
# --------------------------------------------------------------------------------------------

STEPS = 6
# Two input neurons over 6 steps: neuron 0 fires every step, neuron 1 at steps 2 and 4.
SOURCE_SPIKES = np.array([[1, 1, 1, 1, 1, 1],
                          [0, 1, 0, 1, 0, 0]], dtype=float)
# Even weights: fixed_pt truncates odd mixed-sign 8-bit weights to even values.
WEIGHTS = np.array([[6, 0],
                    [4, -2]])
VTH = 10
# Input to the LIF at step t is WEIGHTS @ source(t-1) (Dense delay), zero at t=1:
#   neuron 0: 0, 6, 6, 6, 6, 6      -> v 0, 6, 12>10 spike (reset), 6, 12 spike, 6
#   neuron 1: 0, 4, 2, 4, 2, 4      -> v 0, 4, 6, 10 (not > 10), 12 spike, 4
EXPECTED_SPIKES = np.array([[0, 0, 1, 0, 1, 0],
                            [0, 0, 0, 0, 1, 0]])
EXPECTED_V = np.array([[0, 6, 0, 6, 0, 6],
                       [0, 4, 6, 10, 0, 4]])


def _run(process, steps: int, tag: str) -> None:
    process.run(condition=run_conditions.RunSteps(num_steps=steps),
                run_cfg=run_configs.Loihi2SimCfg(select_tag=tag))


@pytest.mark.parametrize("tag, v_scale", [("floating_pt", 1), ("fixed_pt", 64)])
def test_source_dense_lif_sink(tag, v_scale):
    """RingBuffer -> Dense -> LIF -> RingBuffer sink, with a Monitor on the LIF voltage."""
    source = Source(data=SOURCE_SPIKES)
    dense = Dense(weights=WEIGHTS)
    # fixed_pt: du=4095 clears u every step (decay 4096/4096); floating_pt: du=1 does the same.
    lif = LIF(shape=(2,), du=1 if tag == "floating_pt" else 4095, dv=0, vth=VTH)
    sink = Sink(shape=(2,), buffer=STEPS)
    monitor = Monitor()
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    monitor.probe(lif.v, STEPS)
    try:
        _run(lif, STEPS, tag)
        spikes = sink.data.get()
        voltages = monitor.get_data()[lif.name]["v"]
        final_v = lif.v.get()
    finally:
        lif.stop()
    np.testing.assert_array_equal(spikes, EXPECTED_SPIKES)
    assert spikes.sum(axis=1).tolist() == [2, 1]
    np.testing.assert_array_equal(voltages.T, EXPECTED_V * v_scale)
    np.testing.assert_array_equal(final_v, np.array([6, 4]) * v_scale)


@pytest.mark.parametrize("tag", ["floating_pt", "fixed_pt"])
def test_biased_lif_drives_dense_lif(tag):
    """LIF with bias (no input) -> Dense -> LIF: the bias alone makes the first neuron fire.

    Layer 1, bias 4 (fixed_pt: bias_mant 4 << bias_exp 6 = 256 = 4 * 64), vth 10: v = 4, 8, 12>10
    -> spikes at steps 3, 6. Layer 2 gets weight 8 one step later (steps 4 and 7), vth 10 (640):
    v = 8 at step 4, never above 10 in 7 steps, then 16 > 10 at step 7 -> one spike.
    """
    fixed = tag == "fixed_pt"
    steps = 7
    bias = dict(bias_mant=4, bias_exp=6) if fixed else dict(bias_mant=4.0)
    du = 4095 if fixed else 1
    first = LIF(shape=(1,), du=du, dv=0, vth=VTH, **bias)
    dense = Dense(weights=np.array([[8]]))
    second = LIF(shape=(1,), du=du, dv=0, vth=VTH)
    sink_1 = Sink(shape=(1,), buffer=steps)
    sink_2 = Sink(shape=(1,), buffer=steps)
    first.s_out.connect(dense.s_in)
    first.s_out.connect(sink_1.a_in)
    dense.a_out.connect(second.a_in)
    second.s_out.connect(sink_2.a_in)
    try:
        _run(first, steps, tag)
        spikes_1, spikes_2 = sink_1.data.get()[0], sink_2.data.get()[0]
        v_1, v_2 = first.v.get(), second.v.get()
    finally:
        first.stop()
    np.testing.assert_array_equal(spikes_1, [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(spikes_2, [0, 0, 0, 0, 0, 0, 1])
    scale = 64 if fixed else 1
    np.testing.assert_array_equal(v_1, [4 * scale])  # step 7: 0 after the reset at 6, plus bias
    np.testing.assert_array_equal(v_2, [0])


@pytest.mark.parametrize("tag", ["floating_pt", "fixed_pt"])
def test_conv_is_true_convolution(tag):
    """Lava's Conv flips the kernel (scipy convolve2d), unlike torch's conv2d (correlation).

    Data layout is (X, Y, C); weight is (C_out, KX, KY, C_in). A single spike in the centre of a
    3x3 input with padding 1 yields the kernel itself (a correlation would yield it rotated by 180
    degrees), one step after the spike because of the synaptic delay.
    """
    kernel = np.arange(1, 10).reshape(3, 3)  # asymmetric, all distinct
    data = np.zeros((3, 3, 1, 3))
    data[1, 1, 0, 0] = 1  # spike at step 1 only
    source = Source(data=data)
    conv = Conv(weight=kernel.reshape(1, 3, 3, 1), input_shape=(3, 3, 1), padding=1)
    sink = Sink(shape=(3, 3, 1), buffer=3)
    source.s_out.connect(conv.s_in)
    conv.a_out.connect(sink.a_in)
    try:
        _run(source, 3, tag)
        received = sink.data.get()
    finally:
        source.stop()
    np.testing.assert_array_equal(received[..., 0, 0], np.zeros((3, 3)))
    np.testing.assert_array_equal(received[..., 0, 1], kernel)
    np.testing.assert_array_equal(received[..., 0, 2], np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------
# The runtime patches: quiet children that report their errors, bounded waits
# --------------------------------------------------------------------------------------------

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.dense.models import PyDenseModelFloat  # noqa: E402
from lava.proc.io.source import PySendModelFloat  # noqa: E402


class Boom(AbstractProcess):
    """Receives a vector each step; its model raises at step ``fail_at``."""

    def __init__(self, *, shape, fail_at: int, name: str = None):
        super().__init__(name=name, fail_at=fail_at)
        self.a_in = InPort(shape=shape)


@implements(proc=Boom, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyBoomModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)

    def run_spk(self):
        self.a_in.recv()
        if self.time_step == self.proc_params["fail_at"]:
            raise ZeroDivisionError("boom at step %d" % self.time_step)


def test_runtime_patches_are_installed():
    from lava.magma.runtime import runtime
    from lava.magma.runtime.message_infrastructure import multiprocessing as lava_mp

    lava_compat.import_lava()
    assert lava_mp.SystemProcess.run is lava_compat._system_process_run
    assert runtime.target_fn is lava_compat._target_fn
    assert runtime.Runtime.initialize is lava_compat._runtime_initialize


def test_child_error_is_one_picklable_line():
    import pickle

    from spikedeploy.errors import InputError

    class Unpicklable(Exception):
        def __init__(self, a, b):  # pickle re-creates exceptions from args: this one cannot be
            super().__init__(f"{a}\n{b}")

    err = lava_compat.ChildError.of(Unpicklable("first line", "second line"))
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "Unpicklable: first line second line" and back.exit_code == 1
    assert lava_compat.ChildError.of(InputError("bad field")).exit_code == 2
    assert lava_compat.exit_text(-9) == "killed by SIGKILL" and lava_compat.exit_text(1) == "exit code 1"
    e = lava_compat.LavaProcessError("p (M)", "KeyError: 'x'", 2)
    assert str(e) == "Lava process p (M) failed: KeyError: 'x'" and e.exit_code == 2


def _children() -> list:
    import multiprocessing

    return [p for p in multiprocessing.active_children()]


@pytest.mark.parametrize("fail_at", [1, 3])
def test_failing_process_model_is_reported_not_hung(fail_at):
    """Lava 0.10 alone hangs here: the Dense upstream and the runtime service wait for Boom's
    answer forever. The session reports Boom's exception and ends every child."""
    from spikedeploy.runtimes.lava_session import LavaSession

    source = Source(data=np.ones((2, 8)))
    dense = Dense(weights=np.eye(2))
    boom = Boom(shape=(2,), fail_at=fail_at, name="the-boom")
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(boom.a_in)
    models = {source: PySendModelFloat, dense: PyDenseModelFloat, boom: PyBoomModel}
    cfg = run_configs.Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=models)
    t0 = time.monotonic()
    with pytest.raises(lava_compat.LavaProcessError) as info:
        with LavaSession(boom, cfg) as session:
            session.start()
            session.run(8)
    assert time.monotonic() - t0 < 30
    assert str(info.value) == f"Lava process the-boom (PyBoomModel) failed: ZeroDivisionError: boom at step {fail_at}"
    assert _children() == []
    assert boom.runtime is None  # detached: Lava's __del__ -> stop() has nothing left to wait for


def test_session_runs_and_stops_a_healthy_network():
    from spikedeploy.runtimes.lava_session import LavaSession

    source = Source(data=SOURCE_SPIKES)
    dense = Dense(weights=WEIGHTS)
    sink = Sink(shape=(2,), buffer=STEPS)
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(sink.a_in)
    cfg = run_configs.Loihi2SimCfg(select_tag="floating_pt")
    with LavaSession(sink, cfg) as session:
        session.start()
        session.run(STEPS)
        received = sink.data.get()
    np.testing.assert_array_equal(received[:, 1:], WEIGHTS @ SOURCE_SPIKES[:, :-1])  # Dense: one step late
    assert _children() == [] and session.timings["stop"] > 0


def test_session_in_a_worker_thread():
    """Off the main thread no signal handler can be changed and children are not tied to the
    forking thread's life: the session still runs, stops and leaves no child."""
    import threading

    outcome = {}

    def work():
        try:
            test_session_runs_and_stops_a_healthy_network()
            outcome["ok"] = lava_compat._FORKED_BY_MAIN_THREAD is False  # no PR_SET_PDEATHSIG
        except BaseException as exc:  # noqa: BLE001  (reported below)
            outcome["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert outcome == {"ok": True}
