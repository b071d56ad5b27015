"""Lava with the neuron state carried across frames (``LiveRuntime(carry_state=True)``, the Lava
stream of :mod:`spikedeploy.streaming`): one frame per call, no reset between frames, spike counts
per frame equal to the reference stream's, binary and graded, floating point and fixed point (a
leaky I-LIF + binary LIF graph: the fixed-point pass refuses DI-LIF). Small graphs, one partition:
~5 s in all (not slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.neurons import NeuronState
from spikedeploy.reference import execute, run
from spikedeploy.streaming import open_stream


# the hand-made graph of tests/core/test_streaming.py (tests are not a package: a copy)
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


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_lava_stream_spike_counts_equal_the_reference(encoding):
    g, x = state_graph(), clip()
    whole = execute(g, x, encoding)
    with open_stream(g, "lava", encoding=encoding, partitions=1) as s:
        runs = [s.step(x[t:t + 1]) for t in range(T)]
        assert runs[-1].info["live"] == T - 1 and runs[-1].info["carry_state"]
        with pytest.raises(InputError, match="'n4': not a neuron of the bundle that carries state"):
            s._backend.runtime.run(x[:1], state={"n4": runs[0].state["n1"]})
    for n in NEURONS:
        assert float(whole.records[n].q.sum()) > 0
        streamed = torch.cat([r.spike_counts[n].to(torch.float64) for r in runs])
        assert torch.equal(streamed, whole.records[n].q), n
    # the carried state is the reference's (float64 sums in another order: LINEAR_BATCH_ATOL there)
    for k, v in whole.state.items():
        assert torch.allclose(runs[-1].state[k].m, v.m, rtol=0, atol=1e-12), k
    # without carrying, the frames start fresh and the counts differ (the check above can fail)
    fresh = torch.cat([execute(g, x[t:t + 1], encoding).records["n1"].q for t in range(T)])
    assert not torch.equal(fresh, whole.records["n1"].q)


def test_live_runtime_refuses_a_state_without_carry_state():
    from spikedeploy.exporters.lava import compile_graph
    from spikedeploy.exporters.lava_bundle import LavaBundle
    from spikedeploy.runtimes.lava_live import LiveRuntime

    g, x = state_graph(), clip()
    desc, arrays = compile_graph(g, "binary")
    with LiveRuntime(LavaBundle(None, desc, arrays), partitions=1) as rt:
        with pytest.raises(ConfigError, match="carry_state=True"):
            rt.run(x[:1], state={"n1": NeuronState(torch.zeros(2, 4, 5, 5), torch.zeros(2, 4, 5, 5))})


def test_fixed_point_lava_stream_equals_the_reference():
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
    whole = run(gq, x)
    with open_stream(gq, "lava", partitions=1) as s:
        runs = [s.step(x[t:t + 1]) for t in range(T)]
    assert runs[-1].info["select_tag"] == "fixed_pt"
    for n in ("n1", "n3", "n4"):
        assert float(whole.records[n].q.sum()) > 0
        assert torch.equal(torch.cat([r.spike_counts[n] for r in runs]), whole.records[n].q), n
    for k, v in whole.state.items():  # integers: exact
        assert torch.equal(runs[-1].state[k].m.to(torch.int64), v.m), k
