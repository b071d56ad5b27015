"""Neuron state carried across calls (issue 16 step 3): the neurons' ``state=`` / ``trace.state``,
``reference.run(..., state=)`` in every mode and in fixed point, ``spikedeploy.streaming`` on the
reference and ONNX (state as explicit inputs and outputs) targets, on a small hand-made graph with a
leaky I-LIF, a leaky DI-LIF (D changing between calls), a binary LIF and a stateless I-LIF: T calls
of one step each = one call of T steps = the reference, bit for bit; a zero state is the fresh
start; wrong states and unstreamable graphs give one-line errors naming the node. (Lava:
tests/runtimes/test_lava_state.py; the event SpikeTrack: tests/models/test_spiketrack_event_state.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikedeploy import neurons as N
from spikedeploy.errors import ConfigError, InputError, SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.neurons import NeuronState
from spikedeploy.reference import execute, run, stateful_neurons
from spikedeploy.streaming import open_stream

T = 10
NEURONS = ("n1", "n2", "n3", "n4")


def state_graph(seed: int = 0) -> Graph:
    """x [C=3, 5, 5] -> conv -> leaky I-LIF (n1) -> linear -> leaky DI-LIF (n2) -> linear -> binary
    LIF (n3) -> linear (l3, an output) -> stateless I-LIF (n4, an output)."""
    r = np.random.default_rng(seed)
    p = O.as_param
    nodes = (
        Node("c1", O.Conv2d(weight=p(r.normal(size=(4, 3, 3, 3)) * 0.6), bias=p(r.normal(size=4) * 0.3),
                            padding=(1, 1)), ("x",)),
        Node("n1", O.IntegerLIF(d=4, norm=4.0, leak=0.25), ("c1",)),
        Node("f", O.Reshape(shape=(100,)), ("n1",)),
        Node("l1", O.Linear(weight=p(r.normal(size=(16, 100)) * 0.3), bias=p(r.normal(size=16) * 0.2)), ("f",)),
        Node("n2", O.DynamicIntegerLIF(d_init=3, gate_w=2.0, gate_b=0.1, leak=0.5), ("l1",)),
        Node("l2", O.Linear(weight=p(r.normal(size=(8, 16)) * 0.8), bias=p(r.normal(size=8) * 0.2)), ("n2",)),
        Node("n3", O.BinaryLIF(beta=0.6, threshold=1.0), ("l2",)),
        Node("l3", O.Linear(weight=p(r.normal(size=(6, 8))), bias=None), ("n3",)),
        Node("n4", O.IntegerLIF(d=4, norm=4.0), ("l3",)),
    )
    return Graph(inputs=(TensorSpec("x", (3, 5, 5)),), nodes=nodes, outputs=("n4", "l3"))


def clip(seed: int = 1, B: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(T, B, 3, 5, 5)) * 1.5)


#: PyTorch's float64 ``Linear`` (a BLAS GEMM) chooses its kernel by the number of rows, T*B: the
#: same layer on 1 step and on T = 10 steps can sum in another order (measured: 1.4e-14 on a
#: 100-input layer, B = 2). Values computed by a Linear (l3, and the membranes of n2 and n3, fed by
#: Linear layers) are compared with this tolerance; spike counts, and everything after the
#: convolution (float64 conv2d: the same result whatever the batch, measured), exactly.
LINEAR_BATCH_ATOL = 1e-12
#: graph values that a Linear computes (compared with LINEAR_BATCH_ATOL)
VIA_LINEAR = {"n2", "n3", "l3"}


def assert_same(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if name in VIA_LINEAR:
        assert torch.allclose(a, b, rtol=0, atol=LINEAR_BATCH_ATOL), name
    else:
        assert torch.equal(a, b), name


def assert_states_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert_same(a[k].m, b[k].m, k)
        assert (a[k].q is None) == (b[k].q is None) and (a[k].q is None or torch.equal(a[k].q, b[k].q)), k


# ------------------------------------------------------------------------------------------------
# neurons
# ------------------------------------------------------------------------------------------------

PIECES = (1, 3, 2, 4)


@pytest.mark.parametrize("neuron", ["ilif", "nilif_reset", "dilif", "binary", "fixed_ilif", "fixed_binary"])
def test_a_neuron_fed_in_pieces_equals_one_call_and_zero_state_is_fresh(neuron):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, 2, 7, generator=g, dtype=torch.float64) * 3
    fns = {
        "ilif": lambda x, s: N.integer_lif(x, d=4, leaks=0.25, norm=4.0, state=s),
        "nilif_reset": lambda x, s: N.integer_lif(x, d=4, leaks=0.7, reset_norm=4.0, norm=4.0, state=s),
        "dilif": lambda x, s: N.dynamic_integer(x, d_init=3, gate_w=1.0, gate_b=0.2, leak=0.5, state=s),
        "binary": lambda x, s: N.binary_lif(x, beta=0.7, threshold=1.0, state=s),
        "fixed_ilif": lambda x, s: N.fixed_integer_lif(torch.round(x * 100), d=4, unit=128, reset=128, leak=1024,
                                                       state=s),
        "fixed_binary": lambda x, s: N.fixed_binary_lif(torch.round(x * 100), beta=3000, threshold=256, state=s),
    }
    fn = fns[neuron]
    whole = fn(x, None)
    st, qs, start = None, [], 0
    for n in PIECES:
        tr = fn(x[start:start + n], st)
        qs.append(tr.q)
        st, start = tr.state, start + n
    assert torch.equal(torch.cat(qs), whole.q)
    assert float(whole.q.sum()) > 0
    assert torch.equal(st.m, whole.state.m)
    assert st.m.shape == x.shape[1:]
    zero = NeuronState(torch.zeros_like(st.m), None if st.q is None else torch.zeros_like(st.q))
    assert torch.equal(fn(x, zero).q, whole.q)  # a zero state is the fresh start exactly
    # the state matters: restarting every piece fresh gives other counts
    fresh = torch.cat([fn(x[s:s + n], None).q for s, n in zip((0, 1, 4, 6), PIECES)])
    assert not torch.equal(fresh, whole.q)


def test_neurons_refuse_a_state_they_cannot_carry():
    x = torch.ones(2, 1, 3, dtype=torch.float64)
    st = NeuronState(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    assert N.integer_lif(x, d=4, norm=4.0).state is None  # stateless: carries nothing
    with pytest.raises(ValueError, match="stateless"):
        N.integer_lif(x, d=4, norm=4.0, state=st)
    with pytest.raises(ValueError, match="per-step leaks"):
        N.integer_lif(x, d=4, norm=4.0, leaks=torch.tensor([0.5]), state=st)
    with pytest.raises(ValueError, match="shape"):
        N.integer_lif(x, d=4, norm=4.0, leaks=0.5, state=NeuronState(torch.zeros(2, 3), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="no q"):
        N.binary_lif(x, beta=0.5, state=st)


# ------------------------------------------------------------------------------------------------
# reference
# ------------------------------------------------------------------------------------------------


def test_stateful_neurons_of_the_graph():
    assert stateful_neurons(state_graph()) == {"n1": "membrane", "n2": "membrane", "n3": "residual"}


@pytest.mark.parametrize("mode", ["integer", "binary", "graded"])
def test_reference_stream_equals_one_run_of_all_steps(mode):
    g, x = state_graph(), clip()
    whole = execute(g, x, mode)
    for n in NEURONS:
        assert float(whole.records[n].q.sum()) > 0, f"{n} is silent"
    d = whole.records["n2"].d
    assert d.shape == (T, 2) and len(torch.unique(d[:, 0])) > 1, "D changes between calls"
    with open_stream(g, "reference", mode=mode) as s:
        runs = [s.step(x[t:t + 1]) for t in range(T)]
        assert s.steps == T and s.calls == T
        final = s.state
    for n in NEURONS:
        assert torch.equal(torch.cat([r.spike_counts[n] for r in runs]), whole.records[n].q), n
    for o in g.outputs:
        assert_same(torch.cat([r.outputs[o] for r in runs]), whole.outputs[o], o)
    assert_states_equal(final, whole.state)
    assert sorted(final) == ["n1", "n2", "n3"]
    # uneven pieces, a stream restarted from a given state, and reset()
    with open_stream(g, "reference", mode=mode) as s:
        first = s.step(x[:4])
        with open_stream(g, "reference", mode=mode, state=first.state) as s2:
            rest = s2.step(x[4:])
        assert torch.equal(torch.cat([first.spike_counts["n3"], rest.spike_counts["n3"]]), whole.records["n3"].q)
        s.reset()
        assert s.state == {} and s.steps == 0
        assert torch.equal(s.step(x[:4]).spike_counts["n1"], first.spike_counts["n1"])


def test_carrying_the_state_matters():
    """A stream that starts every frame fresh differs from the carried one (else the invariant
    above could not fail)."""
    g, x = state_graph(), clip()
    whole = execute(g, x, "integer")
    fresh = torch.cat([execute(g, x[t:t + 1], "integer").records["n1"].q for t in range(T)])
    assert not torch.equal(fresh, whole.records["n1"].q)


def test_zero_state_is_the_fresh_start():
    g, x = state_graph(), clip()
    whole = run(g, x)
    zeros = {k: NeuronState(torch.zeros_like(v.m), None if v.q is None else torch.zeros_like(v.q))
             for k, v in whole.state.items()}
    again = run(g, x, state=zeros)
    for n in NEURONS:
        assert torch.equal(again.records[n].q, whole.records[n].q)
    assert torch.equal(again.outputs["l3"], whole.outputs["l3"])  # the same shapes: the same kernels
    assert_states_equal(again.state, whole.state)


def test_fixed_point_stream_equals_one_run():
    """A fixed-point graph (leaky I-LIF, stateless I-LIF and binary LIF; the fixed DI-LIF's stream is
    in tests/core/test_fixed_dilif.py and tests/runtimes/test_lava_fixed_dilif.py): integer state
    (v, q) / u carried exactly."""
    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.passes.quantize import quantize_graph

    r = np.random.default_rng(3)
    p = O.as_param
    nodes = (
        Node("l0", O.Linear(weight=p(r.normal(size=(12, 6)) * 0.7), bias=p(r.normal(size=12) * 0.3)), ("x",)),
        Node("n1", O.IntegerLIF(d=4, norm=4.0, leak=0.25), ("l0",)),
        Node("l1", O.Linear(weight=p(r.normal(size=(8, 12)) * 0.5), bias=p(r.normal(size=8) * 0.2)), ("n1",)),
        Node("n3", O.BinaryLIF(beta=0.6, threshold=1.0), ("l1",)),
        Node("l3", O.Linear(weight=p(r.normal(size=(5, 8))), bias=p(np.full(5, 0.3))), ("n3",)),
        Node("n4", O.IntegerLIF(d=4, norm=4.0), ("l3",)),
    )
    g = Graph(inputs=(TensorSpec("x", (6,)),), nodes=nodes, outputs=("n4",))
    x = torch.from_numpy(r.normal(size=(T, 2, 6)) * 1.5)
    gq = quantize_graph(ExpandSpikes("binary").apply(g), x)
    assert sorted(stateful_neurons(gq)) == ["n1", "n3"]
    whole = run(gq, x)
    with open_stream(gq, "reference") as s:
        runs = [s.step(x[t:t + 1]) for t in range(T)]
    for n in ("n1", "n3", "n4"):
        assert float(whole.records[n].q.sum()) > 0
        assert torch.equal(torch.cat([r.spike_counts[n] for r in runs]), whole.records[n].q), n
    assert runs[-1].precision == "fixed" and runs[-1].state["n1"].m.dtype == torch.int64
    (out,) = gq.outputs
    assert torch.equal(torch.cat([r.integer_outputs[out] for r in runs]), whole.outputs[out])
    assert_states_equal(runs[-1].state, whole.state)


# ------------------------------------------------------------------------------------------------
# ONNX: state as explicit inputs and outputs
# ------------------------------------------------------------------------------------------------

#: real-valued outputs of ONNX vs the reference: the same float64 operations, summed in another
#: order by onnxruntime's MatMul (measured 4.4e-16 here); spike counts are compared exactly
ONNX_OUTPUT_ATOL = 1e-12


def test_onnx_stream_equals_one_onnx_call_and_the_reference():
    from spikedeploy.exporters.onnx import OnnxArtifact, build_model, read_metadata
    from spikedeploy.runtimes.onnx import run as onnx_run

    g, x = state_graph(), clip()
    whole_ref = execute(g, x, "integer")
    m = build_model(g, timesteps=T, state_io=True)
    whole = onnx_run(OnnxArtifact(m, read_metadata(m)), x)  # no state given: zeros = fresh
    with open_stream(g, "onnx") as s:
        runs = [s.step(x[t:t + 1]) for t in range(T)]
    for n in NEURONS:
        streamed = torch.cat([r.spike_counts[n] for r in runs])
        assert torch.equal(streamed, whole.spike_counts[n]), n
        assert torch.equal(streamed, whole_ref.records[n].q), n
    for o in g.outputs:
        streamed = torch.cat([r.outputs[o] for r in runs])
        # onnxruntime's MatMul may also pick its kernel by the row count (LINEAR_BATCH_ATOL)
        assert torch.allclose(streamed, whole.outputs[o], rtol=0, atol=LINEAR_BATCH_ATOL), o
        assert torch.allclose(streamed, whole_ref.outputs[o], rtol=0, atol=ONNX_OUTPUT_ATOL), o
    for k, v in whole.state.items():
        assert torch.equal(runs[-1].state[k].q if v.q is not None else v.m * 0, v.q if v.q is not None else v.m * 0)
        assert torch.allclose(runs[-1].state[k].m, v.m, rtol=0, atol=LINEAR_BATCH_ATOL), k
    for k, v in whole_ref.state.items():  # the membranes: float64 sums in another order
        assert torch.allclose(runs[-1].state[k].m, v.m, rtol=0, atol=ONNX_OUTPUT_ATOL), k


def test_onnx_state_io_export_round_trips_and_refuses_per_step_leaks(tmp_path):
    from spikedeploy.exporters import onnx as onnx_export
    from spikedeploy.runtimes.onnx import run as onnx_run

    g, x = state_graph(), clip()
    path = onnx_export.export(g, tmp_path / "m.onnx", timesteps=1, state_io=True)
    art = onnx_export.load(path)
    assert sorted(art.state) == ["n1", "n2", "n3"]
    assert art.state["n3"]["kind"] == "residual" and sorted(art.state["n1"]["inputs"]) == ["m", "q"]
    first = onnx_run(art, x[:1])
    second = onnx_run(art, x[1:2], state=first.state)
    assert torch.equal(second.spike_counts["n1"], execute(g, x[:2], "integer").records["n1"].q[1:])
    plain = onnx_export.load(onnx_export.export(g, tmp_path / "plain.onnx", timesteps=1))
    assert plain.state == {}
    with pytest.raises(InputError, match="state_io=True"):
        onnx_run(plain, x[:1], state=first.state)
    with pytest.raises(InputError, match="'n4': not a stateful neuron"):
        onnx_run(art, x[:1], state={"n4": first.state["n1"]})
    with pytest.raises(InputError, match=r"'n1': m has shape \[3, 4, 5, 5\]"):
        onnx_run(art, x[:1], state={"n1": NeuronState(torch.zeros(3, 4, 5, 5), torch.zeros(3, 4, 5, 5))})
    nilif = Graph(inputs=(TensorSpec("x", (4,)),), outputs=("s",),
                  nodes=(Node("s", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.25), reset_norm=4.0, label="NI-LIF"),
                              ("x",)),))
    with pytest.raises(ConfigError, match="node 's': a neuron with per-step leaks"):
        onnx_export.build_model(nilif, timesteps=3, state_io=True)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


def test_a_wrong_state_is_one_line_naming_the_node():
    g, x = state_graph(), clip()
    good = run(g, x[:1]).state
    cases = [
        ({"nope": good["n1"]}, "'nope': not a node of the graph"),
        ({"l1": good["n1"]}, "'l1': not a neuron of the graph"),
        ({"n4": good["n1"]}, "'n4': a stateless neuron"),
        ({"n1": NeuronState(torch.zeros(2, 4, 5, 6), torch.zeros(2, 4, 5, 6))}, r"'n1': m has shape \[2, 4, 5, 6\]"),
        ({"n1": NeuronState(torch.zeros(3, 4, 5, 5), torch.zeros(3, 4, 5, 5))}, r"expected \[2, 4, 5, 5\]"),
        ({"n1": NeuronState(good["n1"].m)}, "'n1': an integer LIF state needs q"),
        ({"n3": NeuronState(good["n3"].m, good["n3"].m)}, "'n3': a binary LIF state is"),
        ({"n1": NeuronState(good["n1"].m * float("nan"), good["n1"].q)}, "'n1': m contains NaN"),
        ({"n1": good["n1"].m}, "'n1': expected a NeuronState"),
    ]
    for state, message in cases:
        with pytest.raises(InputError, match=message) as e:
            run(g, x[:1], state=state)
        assert "\n" not in str(e.value)
        if message.startswith("expected"):  # the batch is known at the first step
            with pytest.raises(InputError, match=message):
                open_stream(g, "reference", state=state).step(x[:1])
            continue
        with pytest.raises(InputError, match=message):
            open_stream(g, "reference", state=state)


def test_unstreamable_graphs_and_targets_are_refused_by_name():
    nilif = Graph(inputs=(TensorSpec("x", (4,)),), outputs=("s",),
                  nodes=(Node("s", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.25), reset_norm=4.0, label="NI-LIF"),
                              ("x",)),))
    with pytest.raises(ConfigError, match="neuron 's' .NI-LIF. has a per-step leak"):
        open_stream(nilif, "reference")
    fixed_t = Graph(inputs=(TensorSpec("x", (4,), 3),), outputs=("sel",),
                    nodes=(Node("sel", O.SelectStep(step=0), ("x",)),))
    with pytest.raises(ConfigError, match="graph input 'x' must have exactly T=3"):
        open_stream(fixed_t, "reference")
    g = state_graph()
    with pytest.raises(ConfigError, match="NIR has no state carried between calls"):
        open_stream(g, "nir")
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        open_stream(g, "tpu")
    from spikedeploy.passes import ExpandSpikes

    with pytest.raises(ConfigError, match="ONNX target runs the integer"):
        open_stream(ExpandSpikes("binary").apply(g), "onnx")
    s = open_stream(g, "reference")
    s.close()
    s.close()  # idempotent
    with pytest.raises(SpikedeployError, match="closed"):
        s.step(clip()[:1])


def test_nir_runtime_takes_the_reference_state(tmp_path):
    """NIR has no state between calls; its runtime re-executes the IR with the reference, so it
    takes the same ``state=``."""
    from spikedeploy.exporters import nir as nir_export
    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.runtimes.nir import run as nir_run

    g, x = ExpandSpikes("binary").apply(state_graph()), clip()
    art = nir_export.load(nir_export.export(g, tmp_path / "m.nir", encoding="binary"))
    whole = run(g, x)
    first = nir_run(art, x[:4])
    rest = nir_run(art, x[4:], state=first.state)
    for n in NEURONS:
        assert torch.equal(torch.cat([first.spike_counts[n], rest.spike_counts[n]]), whole.records[n].q), n
