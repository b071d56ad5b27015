"""The Lava kernels (runtimes/lava_kernels.py): pure functions, each equal to the reference rule it
implements; the process-model registry.

Exactness: a kernel that runs the reference's own operation (the same torch op on the same layout)
is compared bit for bit on random floats. Kernels whose operand order may differ from the
reference's (numpy vs torch matmul, CSR sums) are compared bit for bit on operands whose every
partial sum is exact in float64 (small integers, weights that are multiples of 1/8), so any
summation order gives the same bits; the tests say which.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spikedeploy.ir import ops as O
from spikedeploy.reference import RULES as REF, SpikeValue
from spikedeploy.runtimes import lava_kernels as K


def _spikes(rng, shape, d):
    """Integer spike counts in 0..d (float64), some zero, some at the limit."""
    return rng.integers(0, d + 1, size=shape).astype(np.float64)


def _eighths(rng, shape):
    """Weights that are multiples of 1/8 in [-2, 2]: sums of a few hundred of them are exact."""
    return rng.integers(-16, 17, size=shape).astype(np.float64) / 8.0


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# purity: inputs unchanged, a new array out, PyTorch's thread count untouched
# ---------------------------------------------------------------------------------------------


def _kernel_calls():
    rng = np.random.default_rng(0)
    h, c, cv, n = 2, 4, 6, 5
    mem = rng.normal(size=(h, c // h, cv // h))
    csr = sp.csr_matrix(_eighths(rng, (7, 12)) * (rng.random((7, 12)) < 0.5))
    state = {"m": rng.normal(size=8), "q": _spikes(rng, 8, 4)}
    lif = {"kind": "integer_lif", "d": 4, "leak": 0.25, "reset_norm": 1.0, "rounding": "half_even"}
    fixed_lif = {"kind": "fixed_integer_lif", "d": 4, "unit": 8, "reset": 2, "leak": [1000, 3000],
                 "rounding": "half_even", "state_bits": 8}
    fixed_state = {"v": rng.integers(-40, 60, 8), "q": rng.integers(0, 5, 8)}
    int_csr = sp.csr_matrix(rng.integers(-300, 300, (7, 12)) * (rng.random((7, 12)) < 0.5))
    return {
        "quantize": (K.quantize, (rng.normal(size=8) * 3, 4, "half_even")),
        "neuron_step": (K.neuron_step, (lif, rng.normal(size=8) * 3, 1, state)),
        "neuron_output[binary]": (K.neuron_output, (_spikes(rng, 8, 4), 2, False)),
        "neuron_output[graded]": (K.neuron_output, (_spikes(rng, 8, 4), 0, True)),
        "sparse_product": (K.sparse_product, (csr, (rng.random(12) < 0.5).astype(np.float64), True)),
        "matmul_product": (K.matmul_product, (rng.normal(size=(3, 4)), rng.normal(size=8), 2)),
        "conv_product": (K.conv_product, (rng.normal(size=2 * 5 * 5), rng.normal(size=(3, 2, 3, 3)), (2, 5, 5),
                                          (1, 1), (1, 1), (1, 1), 1)),
        "kv_pairs": (K.kv_pairs, (_spikes(rng, c * n, 1), _spikes(rng, cv * n, 1), _spikes(rng, (h, n, c // h), 2),
                                  _spikes(rng, (h, n, cv // h), 2), h)),
        "attention_read": (K.attention_read, (_spikes(rng, c * n, 1), _spikes(rng, (h, c // h, cv // h), 3), 0.3)),
        "read_rows": (K.read_rows, (_spikes(rng, c * n, 1), mem)),
        "scaled_memory": (K.scaled_memory, (mem, 1.0)),
        "softmax_over_steps": (K.softmax_over_steps, (rng.normal(size=(3, 4)),)),
        "template_gate_sum": (K.template_gate_sum, (_spikes(rng, (3, 4, 8), 1), rng.random(12), 4, 0.5, False)),
        "st_pairs": (K.st_pairs, (_spikes(rng, (h, n, 2), 1), _spikes(rng, (h, n, 3), 1), _spikes(rng, (h, n, 2), 2),
                                  _spikes(rng, (h, n, 3), 2), "joint")),
        "st_pairs[temporal]": (K.st_pairs, (_spikes(rng, (h, n, 2), 1), _spikes(rng, (h, n, 3), 1),
                                            _spikes(rng, (h, n, 2), 2), _spikes(rng, (h, n, 3), 2), "temporal")),
        "st_memory": (K.st_memory, (_spikes(rng, (h, 1, 2, 3), 5), _spikes(rng, (h, 1, 3), 5), "hamming")),
        "st_read": (K.st_read, (_spikes(rng, (h, n, 2), 1), _spikes(rng, (h, 1, 2, 3), 5), "joint")),
        "st_read[temporal]": (K.st_read, (_spikes(rng, (h, n, 2), 1), _spikes(rng, (h, n, 2, 3), 5), "temporal")),
        "st_output": (K.st_output, (_spikes(rng, (h, n, 3), 9), _spikes(rng, (h, 1, 3), 9), 1.0)),
        # fixed point (int64)
        "exact_int64": (K.exact_int64, (_spikes(rng, 8, 4), "x")),
        "fixed_saturate": (K.fixed_saturate, (rng.integers(-300, 300, 8), 9)),
        "fixed_decay": (K.fixed_decay, (rng.integers(-300, 300, 8), 1024)),
        "fixed_round": (K.fixed_round, (rng.integers(-30, 30, 8), 4, "half_even")),
        "fixed_neuron_step": (K.fixed_neuron_step, (fixed_lif, rng.integers(-40, 60, 8), 1, fixed_state)),
        "fixed_neuron_step[dilif]": (K.fixed_neuron_step, ({**fixed_lif, "kind": "fixed_dynamic_integer_lif", "d_init": 2,
                                                            "leak": 1000, "sign": 1, "thresholds": [-9, 30, 90]},
                                                           rng.integers(-40, 60, 8), 1, fixed_state)),
        "fixed_sparse_product": (K.fixed_sparse_product, (int_csr, rng.integers(0, 2, 12))),
        "fixed_matmul_product": (K.fixed_matmul_product, (rng.integers(-9, 9, (3, 4)), rng.integers(-9, 9, 8), 2)),
        "fixed_conv_product": (K.fixed_conv_product, (rng.integers(0, 5, 2 * 5 * 5), rng.integers(-9, 9, (3, 2, 3, 3)),
                                                      (2, 5, 5), (1, 1), (1, 1), (1, 1), 1, 162.0)),
        "fixed_attention_read": (K.fixed_attention_read, (rng.integers(0, 2, c * n), rng.integers(0, 4, (h, c // h, cv // h)),
                                                          3)),
        "fixed_read_rows": (K.fixed_read_rows, (rng.integers(0, 2, c * n), rng.integers(-99, 99, (h, c // h, cv // h)))),
    }


def test_every_public_kernel_is_checked_for_purity():
    names = {k.split("[")[0] for k in _kernel_calls()}
    assert names == set(K.__all__) - {"heads", "merge_heads"}  # the two layouts are views by design


def _copy(a):
    if isinstance(a, dict):
        return {k: _copy(v) for k, v in a.items()}
    if sp.issparse(a):
        return a.copy()
    return np.array(a, copy=True) if isinstance(a, np.ndarray) else a


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if sp.issparse(a):
        return (a != b).nnz == 0
    return np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


def _arrays(result):
    if isinstance(result, tuple):  # a count (the fixed-point kernels' saturation) is no array
        return [a for r in result if not isinstance(r, int) for a in _arrays(r)]
    if isinstance(result, dict):
        return [a for r in result.values() for a in _arrays(r)]
    return [result]


@pytest.mark.parametrize("name", sorted(_kernel_calls()))
def test_kernels_are_pure(name):
    fn, args = _kernel_calls()[name]
    before = [_copy(a) for a in args]
    threads = torch.get_num_threads()
    other = 2 if threads != 2 else 3
    torch.set_num_threads(other)  # a count no model would set: a kernel that sets 1 is caught
    try:
        result = fn(*args)
        assert torch.get_num_threads() == other, f"{name} changed PyTorch's thread count"
    finally:
        torch.set_num_threads(threads)
    assert all(_same(a, b) for a, b in zip(args, before)), f"{name} changed an input"
    outs = _arrays(result)
    assert outs and all(isinstance(o, np.ndarray) for o in outs), f"{name} returned {type(result)}"
    for o in outs:
        for a in args:
            for arr in _arrays(a) if isinstance(a, (dict, tuple)) else [a]:
                if isinstance(arr, np.ndarray):
                    assert not np.shares_memory(o, arr), f"{name} returned a view of an input"
    assert fn(*args).__repr__() == result.__repr__()  # same inputs, same result: no hidden state


def test_kernels_module_defines_no_classes_and_imports_no_lava():
    own = [n for n, v in inspect.getmembers(K, inspect.isclass) if v.__module__ == K.__name__]
    assert own == []
    code = ("import sys; import spikedeploy.runtimes.lava_kernels; "
            "print(sorted(m for m in sys.modules if m == 'lava' or m.startswith('lava.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------------------------------------
# each kernel against the reference rule it implements
# ---------------------------------------------------------------------------------------------


NEURONS = [
    O.IntegerLIF(d=4, norm=4.0),
    O.IntegerLIF(d=4, norm=4.0, leak=0.25, rounding="half_up"),
    O.IntegerLIF(d=4, norm=4.0, leak=(0.3, 0.7), reset_norm=4.0),  # NI-LIF: per-step leaks, normalized reset
    O.DynamicIntegerLIF(d_init=3, gate_w=0.8, gate_b=-0.2, leak=0.5),
    O.BinaryLIF(beta=0.6, threshold=1.0),
]


@pytest.mark.parametrize("op", NEURONS, ids=lambda op: f"{op.kind}-{getattr(op, 'leak', None)}")
def test_neuron_step_equals_the_reference_neuron(op):
    from spikedeploy.exporters.lava import _neuron_params

    rng = np.random.default_rng(1)
    T, n = 3, 64
    x = rng.normal(size=(T, 1, n)) * 3 + 1
    x[0, 0, :4] = [0.5, 1.5, 2.5, 3.5]  # rounding ties: half to even / half up
    ref = REF[type(op)].dynamics(op, _t(x)).q.numpy()
    params, state, qs = _neuron_params(op), {}, []
    for t in range(T):
        q, state = K.neuron_step(params, x[t, 0], t, state)
        qs.append(q)
    np.testing.assert_array_equal(np.stack(qs)[:, None], ref)  # the same float64 formulas: exact
    assert ref.any() and (ref == 0).any()


@pytest.mark.parametrize("graded", [False, True])
def test_neuron_output_is_the_reference_spike_code(graded):
    rng = np.random.default_rng(2)
    d = 4
    q = _spikes(rng, 32, d)
    sent = np.stack([K.neuron_output(q, j, graded) for j in range(d)])
    if graded:  # one event carrying q, then nothing
        np.testing.assert_array_equal(sent[0], q)
        assert not sent[1:].any()
    else:  # SpikeValue.substeps: the thermometer code s_k = [q > k]
        subs = [s.numpy() for s in SpikeValue(q=_t(q), encoding="binary", window=d).substeps()]
        np.testing.assert_array_equal(sent[:len(subs)], np.stack(subs))
        assert not sent[len(subs):].any()
        np.testing.assert_array_equal(sent.sum(axis=0), q)
    assert q.max() == d


@pytest.mark.parametrize("binary", [True, False])
def test_sparse_product_equals_the_reference_linear(binary):
    rng = np.random.default_rng(3)
    w = _eighths(rng, (20, 30)) * (rng.random((20, 30)) < 0.4)
    x = _spikes(rng, 30, 1 if binary else 4)  # unit spikes (0-bit messages) or graded counts
    op = O.Linear(weight=w)
    ref = REF[O.Linear].linear(op, _t(x)).numpy()
    got = K.sparse_product(sp.csr_matrix(w), x, binary)
    np.testing.assert_array_equal(got, ref)  # multiples of 1/8 times small integers: exact in any order
    assert got.shape == (20,) and got.any()


def test_matmul_product_equals_the_reference_linear_per_row():
    rng = np.random.default_rng(4)
    w, rows = _eighths(rng, (6, 10)), 5
    x = _spikes(rng, (rows, 10), 4)
    ref = REF[O.Linear].linear(O.Linear(weight=w), _t(x)).numpy().reshape(-1)
    np.testing.assert_array_equal(K.matmul_product(w, x.reshape(-1), rows), ref)  # exact: see _eighths


@pytest.mark.parametrize("stride,padding,dilation,groups", [((1, 1), (1, 1), (1, 1), 1), ((2, 1), (0, 2), (1, 2), 2)])
def test_conv_product_equals_the_reference_conv(stride, padding, dilation, groups):
    rng = np.random.default_rng(5)
    c, hw = 4, (7, 9)
    w = rng.normal(size=(6, c // groups, 3, 3))
    x = _spikes(rng, (1, 1, c) + hw, 1)
    op = O.Conv2d(weight=w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref = REF[O.Conv2d].linear(op, _t(x)).numpy().reshape(-1)
    for kernel in (w, _t(w)):  # an array, or the tensor a model keeps
        got = K.conv_product(x.reshape(-1), kernel, (c,) + hw, stride, padding, dilation, groups)
        np.testing.assert_array_equal(got, ref)  # the same float64 torch conv2d: bit for bit
    assert ref.any()


def _attention_inputs(rng, h=2, c=8, cv=6, n=5, d=3):
    return h, c, cv, n, _spikes(rng, (1, 1, c, n), d), _spikes(rng, (1, 1, c, n), d), _spikes(rng, (1, 1, cv, n), d)


def test_kv_pairs_over_a_window_count_the_reference_memory():
    rng = np.random.default_rng(6)
    h, c, cv, n, _, k, v = _attention_inputs(rng)
    d = 3
    op = O.MemoryWrite(num_heads=h, scale=0.375)
    ref = REF[O.MemoryWrite](op, [SpikeValue(_t(k), "binary", d), SpikeValue(_t(v), "binary", d)], None).numpy()
    kv, ck, cvs = np.zeros((h, c // h, cv // h)), np.zeros((h, n, c // h)), np.zeros((h, n, cv // h))
    for j in range(d):  # the binary window: unit spikes sub-step by sub-step
        inc, ck, cvs = K.kv_pairs((k[0, 0] > j).astype(float).reshape(-1), (v[0, 0] > j).astype(float).reshape(-1),
                                  ck, cvs, h)
        kv = kv + inc
    np.testing.assert_array_equal(K.scaled_memory(kv, op.scale), ref.reshape(-1))  # integer counts, one rounding
    # graded: one sub-step carrying the counts
    inc, _, _ = K.kv_pairs(k.reshape(-1), v.reshape(-1), np.zeros_like(ck), np.zeros_like(cvs), h)
    np.testing.assert_array_equal(K.scaled_memory(inc, op.scale), ref.reshape(-1))
    assert ref.any()


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_attention_read_summed_over_the_q_window_equals_the_reference_attention(encoding):
    rng = np.random.default_rng(7)
    h, c, cv, n, q, k, v = _attention_inputs(rng)
    d, scale = 3, 0.125  # a power of two: the sum of scaled rows is the scaled sum, bit for bit
    op = O.SpikeLinearAttention(num_heads=h, scale=scale)
    vals = [SpikeValue(_t(a), encoding, d) for a in (q, k, v)]
    ref = REF[O.SpikeLinearAttention](op, vals, None).numpy().reshape(-1)
    kv = REF[O.MemoryWrite](O.MemoryWrite(num_heads=h), vals[1:], None).numpy()[0, 0]  # [H, C/H, Cv/H]
    subs = [q.reshape(-1)] if encoding == "graded" else [(q > j).astype(float).reshape(-1) for j in range(d)]
    got = sum(K.attention_read(s, kv, scale) for s in subs)
    np.testing.assert_array_equal(got, ref)  # integer products, exact scale
    assert ref.any()


@pytest.mark.parametrize("steps", [1, 3])
def test_read_rows_then_scale_equals_the_reference_memory_read(steps):
    rng = np.random.default_rng(8)
    h, c, cv, n, d, scale = 2, 8, 6, 7, 3, 0.3
    memory = rng.normal(size=(steps, h, c // h, cv // h))
    q = _spikes(rng, (steps, 1, c, n), d)
    q[:, :, :, 2] = 0  # a token without events reads nothing
    op = O.MemoryRead(memory=memory, num_heads=h, scale=scale)
    ref = REF[O.MemoryRead](op, [SpikeValue(_t(q), "binary", d)], None).numpy()
    for t in range(steps):
        acc = None  # the model's window sum, in arrival order, then the scale once
        for j in range(d):
            y = K.read_rows((q[t, 0] > j).astype(float).reshape(-1), memory[t])
            acc = y if acc is None else acc + y
        np.testing.assert_array_equal(acc * scale, ref[t, 0].reshape(-1))  # the reference's order: bit for bit
    assert ref.any() and not ref[:, :, :, 2].any()


def test_softmax_over_steps_equals_the_reference_gate_softmax():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(3, 10)) * 4
    ref = REF[O.GateSoftmax](O.GateSoftmax(), [_t(logits[:, None])], None).numpy()  # [T, B=1, C]
    np.testing.assert_array_equal(K.softmax_over_steps(logits), ref.reshape(-1))  # the same torch softmax
    np.testing.assert_allclose(ref.sum(axis=0), 1.0, rtol=0, atol=1e-15)  # a softmax over the 3 steps


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_template_gate_sum_equals_the_reference_template_gate(encoding):
    rng = np.random.default_rng(10)
    T, C, r, d, scale = 3, 4, 6, 2, 0.7
    x = _spikes(rng, (T, 1, C, r), d)
    w = rng.random((T, 1, C))
    op = O.TemplateGate(scale=scale)
    ref = REF[O.TemplateGate](op, [SpikeValue(_t(x), encoding, d), _t(w)], None).numpy().reshape(-1)
    in_len = 1 if encoding == "graded" else d
    xs = np.zeros((T, in_len, C * r))  # the model's store: spikes per step and sub-step
    for j in range(in_len):
        xs[:, j] = x[:, 0].reshape(T, -1) if encoding == "graded" else (x[:, 0] > j).reshape(T, -1)
    got = K.template_gate_sum(xs, w.reshape(-1), C, scale, encoding == "graded")
    np.testing.assert_array_equal(got, ref)  # the reference's weighted sum, in its order: bit for bit
    assert ref.any()


# ---------------------------------------------------------------------------------------------
# the process-model registry
# ---------------------------------------------------------------------------------------------


def _one_of_each_process():
    """One small instance of every project process (constructor keywords as the runtime passes them)."""
    from spikedeploy.runtimes import lava_procs as LP

    z = np.zeros
    clock = {"period": 1, "num_macro": 1}
    lif = {"kind": "integer_lif", "d": 4, "leak": None, "reset_norm": 1.0, "rounding": "half_even"}
    att = {"channels": 2, "v_channels": 2, "tokens": 1, "heads": 1, "scale": 1.0}
    return [
        LP.IntegerNeuron(size=2, bias=z(2), neuron=lif, encoding="graded", window=1, in_start=1, in_len=1,
                         sample_steps=1, **clock),
        LP.Delay(size=2, delay=1),
        LP.Junction(size=2, in_start=1, in_len=1, **clock),
        LP.ConvSynapse(weight=z((1, 1, 1, 1)), in_shape=(1, 2, 2), out_shape=(1, 2, 2), stride=(1, 1), padding=(0, 0),
                       dilation=(1, 1), groups=1),
        LP.MatMulSynapse(weight=z((2, 3)), rows=1),
        LP.SpikeAttention(kv_start=1, kv_len=1, q_start=2, q_len=1, **att, **clock),
        LP.MemoryWriter(kv_start=1, kv_len=1, **att, **clock),
        LP.SpaceTimeAttention(kv_start=1, kv_len=1, q_start=2, q_len=1, groupings=["joint"], score="hamming",
                              sample_steps=1, **att, **clock),
        LP.HostSource(values=z((1, 2)), start=1, period=1),
        LP.Readout(size=2, offset=z(2), start=1, length=1, **clock),
        LP.StepGate(size=2, start=1, accept=[0], **clock),
        LP.HostSoftmax(size=2, offset=z((1, 2)), in_start=1, in_len=1, fire=2, steps=1, **clock),
        LP.TemplateGateSynapse(size=2, channels=2, scale=1.0, encoding="graded", in_start=1, in_len=1, w_start=1,
                               fire=2, steps=1, **clock),
        LP.MemoryReadSynapse(memory=z((1, 1, 2, 2)), q_start=1, q_len=1, fire=2, **att, **clock),
    ]


def test_every_model_is_made_by_the_factory_with_the_process_ports_and_vars():
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.resources import CPU

    from spikedeploy.runtimes import lava_procs as LP

    procs = _one_of_each_process()
    assert {type(p) for p in procs} == set(LP.MODELS)  # every registered process, and only those
    assert LP.MODELS_BY_TAG["floating_pt"] is LP.MODELS
    for proc in procs:
        model = LP.MODELS[type(proc)]
        spec = model.model_spec
        assert isinstance(spec, LP.ModelSpec) and spec.process is type(proc) and spec.tag == "floating_pt"
        assert model.__name__ == f"Py{type(proc).__name__}Float"
        declared = {n for n in dir(model) if isinstance(getattr(model, n), LavaPyType)}
        assert declared == set(spec.ins) | set(spec.outs) | set(spec.vars), model.__name__
        assert set(spec.ins) == {p.name for p in proc.in_ports}, model.__name__
        assert set(spec.outs) == {p.name for p in proc.out_ports}, model.__name__
        assert set(spec.vars) == {v.name for v in proc.vars}, model.__name__
        assert model.implements_process is type(proc) and model.tags == ["floating_pt"]
        assert model.required_resources == [CPU]


def test_registry_rejects_a_second_model_for_a_process():
    from spikedeploy.runtimes import lava_procs as LP

    before = dict(LP.MODELS)
    for process, model in before.items():
        with pytest.raises(ValueError, match=f"process {process.__name__} already has the model {model.__name__}"):
            LP.register_model(process, model)
    other = type("PyOtherNeuron", (LP._TapModel,), {})
    with pytest.raises(ValueError, match="process IntegerNeuron already has the model PyIntegerNeuronFloat"):
        LP.process_model(LP.IntegerNeuron, ins=("a_in",), outs=("s_out",), vars=("bias", "q_rec"))(other)
    assert not hasattr(other, "model_spec") and not hasattr(other, "a_in")  # refused before it was touched
    assert LP.MODELS == before
    with pytest.raises(ValueError, match="no Lava types for the tag 'other_pt'"):
        LP.declare_model(LP.PyIntegerNeuronFloat.model_spec.with_tag("other_pt"))
    with pytest.raises(ValueError, match="process IntegerNeuron already has the model PyIntegerNeuronFixed"):
        LP.declare_model(LP.PyIntegerNeuronFloat.model_spec.with_tag("fixed_pt"))(type("PyX", (LP._TapModel,), {}))


def test_a_second_tag_is_a_subclass_declared_with_the_same_spec(monkeypatch):
    """How issue 14's fixed_pt models plug in: a TAG_TYPES row, a subclass, the same ports."""
    from spikedeploy.runtimes import lava_procs as LP

    monkeypatch.setitem(LP.TAG_TYPES, "test_pt", LP.TAG_TYPES["floating_pt"])
    monkeypatch.setitem(LP.MODELS_BY_TAG, "test_pt", {})
    before = dict(LP.MODELS)

    @LP.declare_model(LP.PyIntegerNeuronFloat.model_spec.with_tag("test_pt"))
    class PyIntegerNeuronTest(LP.PyIntegerNeuronFloat):
        pass

    assert LP.MODELS_BY_TAG["test_pt"] == {LP.IntegerNeuron: PyIntegerNeuronTest} and LP.MODELS == before
    assert PyIntegerNeuronTest.tags == ["test_pt"] and LP.PyIntegerNeuronFloat.tags == ["floating_pt"]
    assert PyIntegerNeuronTest.model_spec.ins == LP.PyIntegerNeuronFloat.model_spec.ins == ("a_in",)


# ---------------------------------------------------------------------------------------------
# fixed point: the int64 kernels against the reference's fixed-point rules (spikedeploy.neurons)
# ---------------------------------------------------------------------------------------------


FIXED_NEURONS = [
    O.FixedIntegerLIF(d=4, unit=8, reset=8),  # stateless I-LIF
    O.FixedIntegerLIF(d=4, unit=8, reset=8, rounding="half_up"),
    O.FixedIntegerLIF(d=4, unit=16, reset=16, leak=1024),  # SpikeYOLO's 0.25
    O.FixedIntegerLIF(d=4, unit=16, reset=4, leak=(1234, 3001, 77)),  # NI-LIF: per-step leaks, normalized reset
    O.FixedIntegerLIF(d=8, unit=4, reset=4, leak=4096),  # the integer IF
    O.FixedIntegerLIF(d=3, unit=8, reset=8, leak=2048, state_bits=8),  # a narrow state: saturates
    O.FixedBinaryLIF(beta=2458, threshold=16),
    O.FixedBinaryLIF(beta=4000, threshold=5, state_bits=7),
]


@pytest.mark.parametrize("op", FIXED_NEURONS, ids=lambda op: f"{op.kind}-{getattr(op, 'leak', None) or getattr(op, 'beta', None)}-{op.state_bits}")
def test_fixed_neuron_step_equals_the_reference_fixed_neuron(op):
    """Every tie rule at exact ties, negative states (decay truncates toward zero), and the
    saturation counts of narrow states: equal to spikedeploy.neurons' int64 rules."""
    from spikedeploy.exporters.lava import _neuron_params

    rng = np.random.default_rng(2)
    T, n = 4, 96
    top = (1 << (op.state_bits - 1)) - 1
    x = rng.integers(-top // 2, top, size=(T, 1, n))
    unit = getattr(op, "unit", 2)
    x[0, 0, :6] = [unit // 2, 3 * unit // 2, 5 * unit // 2, -unit // 2, 7 * unit // 2, 2 * top]  # ties, a clamp
    ref = REF[type(op)].dynamics(op, torch.from_numpy(x.astype(np.float64)))
    params, state, qs, sat = _neuron_params(op), {}, [], 0
    for t in range(T):
        q, state, s = K.fixed_neuron_step(params, x[t, 0], t, state)
        assert q.dtype == np.int64
        qs.append(q)
        sat += s
    np.testing.assert_array_equal(np.stack(qs)[:, None], ref.q.numpy())
    assert sat == ref.saturated and sat >= 1  # the clamp of x[0, 0, 5] at least
    assert ref.q.numpy().any() and (ref.q.numpy() == 0).any()


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_fixed_round_is_exact_at_every_tie(rounding):
    v = np.arange(-64, 65, dtype=np.int64)
    for unit in (2, 4, 8, 64):
        got = K.fixed_round(v, unit, rounding)
        exact = v / unit  # exact in float64 (small dyadic values)
        want = np.floor(exact + 0.5) if rounding == "half_up" else np.round(exact)
        np.testing.assert_array_equal(got, want.astype(np.int64))


def test_fixed_decay_truncates_toward_zero_and_saturation_is_counted():
    p = np.array([-4097, -1, 0, 1, 4097, 10_000], dtype=np.int64)
    np.testing.assert_array_equal(K.fixed_decay(p, 2048), [-2048, 0, 0, 0, 2048, 5000])
    v, n = K.fixed_saturate(np.array([-200, -127, 0, 127, 128, 300]), 8)
    np.testing.assert_array_equal(v, [-127, -127, 0, 127, 127, 127])
    assert n == 3  # -200, 128, 300: counted, never wrapped


def test_fixed_products_are_exact_integers():
    rng = np.random.default_rng(3)
    w = sp.csr_matrix(rng.integers(-2000, 2000, (9, 20)) * (rng.random((9, 20)) < 0.4))
    x = rng.integers(-(1 << 20), 1 << 20, 20)
    got = K.fixed_sparse_product(w, x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, w.toarray().astype(object) @ x.astype(object))  # Python integers
    kernel = rng.integers(-127, 128, (4, 2, 3, 3))
    xi = rng.integers(-(1 << 23), 1 << 23, 2 * 6 * 6)
    bound = float(np.abs(kernel).reshape(4, -1).sum(1).max())
    got = K.fixed_conv_product(xi, torch.from_numpy(kernel.astype(np.float64)), (2, 6, 6), (1, 1), (1, 1), (1, 1), 1,
                               bound)
    ref = torch.nn.functional.conv2d(torch.from_numpy(xi.reshape(1, 2, 6, 6)), torch.from_numpy(kernel), padding=1)
    np.testing.assert_array_equal(got, ref.reshape(-1).numpy())  # int64 torch conv: the exact integers
    with pytest.raises(ValueError, match="2\\*\\*53"):
        K.fixed_conv_product(xi, torch.from_numpy(kernel.astype(np.float64)), (2, 6, 6), (1, 1), (1, 1), (1, 1), 1,
                             2.0 ** 40)
    with pytest.raises(ValueError, match="not exact integers"):
        K.exact_int64(np.array([1.0, 2.5]), "x")


def test_every_project_process_has_a_fixed_model_or_is_refused_by_quantization():
    """fixed_pt: a subclass of the float model, the same ports (the neuron adds its saturation
    Var), int64 types; HostSoftmax and TemplateGateSynapse have none (QuantizeFixedPoint refuses
    GateSoftmax/TemplateGate); Lava's Sparse and RingBuffer get the exact integer models."""
    from lava.magma.core.model.py.type import LavaPyType
    from lava.proc.io.source import RingBuffer
    from lava.proc.sparse.process import Sparse

    from spikedeploy.passes.quantize import _UNSUPPORTED
    from spikedeploy.runtimes import lava_procs as LP

    fixed = LP.MODELS_BY_TAG["fixed_pt"]
    assert set(LP.MODELS) - set(fixed) == {LP.HostSoftmax, LP.TemplateGateSynapse}
    assert O.GateSoftmax in _UNSUPPORTED and O.TemplateGate in _UNSUPPORTED
    for proc, model in fixed.items():
        assert model.tags == ["fixed_pt"], model.__name__
        types = {n: getattr(model, n) for n in dir(model) if isinstance(getattr(model, n), LavaPyType)}
        for name, lt in types.items():
            if name != "num_message_bits":
                assert lt.d_type is np.int64, (model.__name__, name)
        if proc in LP.MODELS:
            assert issubclass(model, LP.MODELS[proc]) and model.__name__ == f"Py{proc.__name__}Fixed"
            spec = model.model_spec
            extra = {"saturated"} if proc is LP.IntegerNeuron else set()
            assert set(spec.vars) == set(LP.MODELS[proc].model_spec.vars) | extra
    assert fixed[Sparse] is LP.PySparseModelExact and fixed[RingBuffer] is LP.PyRingBufferExact
