"""The NIR peer matrix: the NIR-expressible test networks, what each peer is expected to do with
each, and the README table rendered from the results (tests/interop/test_nir_peers.py runs it;
scripts/nir_interop_table.py writes the table into the README).

Every expectation is one of
- ``exact``: the peer's output equals spikedeploy's reference spike for spike;
- ``model``: the peer runs another neuron than NIR's, and its output equals, spike for spike, a
  numpy model of that neuron fed the same network (the exact difference, written out below);
- ``fails``: the peer raises (its exception matches the pattern); the reason names the peer's
  bug or missing mapping. When a peer is fixed the test fails and the expectation must change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.reference import run

T, B = 8, 3


def _conv(n1, n2) -> Graph:
    """Conv2d -> neuron -> AvgPool2d -> Flatten -> Linear -> neuron on [2, 8, 8] (dyadic weights:
    float32 peers compute the same sums exactly)."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.integers(-4, 5, (4, 2, 3, 3)) / 8, rng.integers(-2, 3, 4) / 8
    w2, b2 = rng.integers(-4, 5, (5, 64)) / 8, rng.integers(-2, 3, 5) / 8
    nodes = (
        Node("conv", O.Conv2d(weight=O.as_param(w1), bias=O.as_param(b1), padding=(1, 1)), ("x",)),
        Node("lif1", n1, ("conv",)),
        Node("pool", O.AvgPool2d(kernel=(2, 2), stride=(2, 2)), ("lif1",)),
        Node("flat", O.Reshape(shape=(64,)), ("pool",)),
        Node("fc", O.Linear(weight=O.as_param(w2), bias=O.as_param(b2)), ("flat",)),
        Node("lif2", n2, ("fc",)),
    )
    return Graph(inputs=(TensorSpec("x", (2, 8, 8)),), nodes=nodes, outputs=("lif2",))


def _mlp(n1, n2) -> Graph:
    """Linear -> neuron -> Linear -> neuron on [10] (dyadic weights)."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.integers(-4, 5, (12, 10)) / 8, rng.integers(-2, 3, 12) / 8
    w2, b2 = rng.integers(-4, 5, (5, 12)) / 8, rng.integers(-2, 3, 5) / 8
    nodes = (Node("fc1", O.Linear(weight=O.as_param(w1), bias=O.as_param(b1)), ("x",)),
             Node("lif1", n1, ("fc1",)),
             Node("fc2", O.Linear(weight=O.as_param(w2), bias=O.as_param(b2)), ("lif1",)),
             Node("lif2", n2, ("fc2",)))
    return Graph(inputs=(TensorSpec("x", (10,)),), nodes=nodes, outputs=("lif2",))


def _lif(theta):
    return O.BinaryLIF(beta=0.0, threshold=theta)


#: name -> (graph, description); every network is NIR-expressible (standard nodes and composites)
NETS: Dict[str, Tuple[Callable[[], Graph], str]] = {
    "conv_lif": (lambda: _conv(_lif(0.5), _lif(0.25)), "conv + avg-pool + linear, binary LIF (nir.LIF)"),
    "mlp_lif": (lambda: _mlp(_lif(0.5), _lif(0.5)), "2-layer MLP, binary LIF (nir.LIF)"),
    "mlp_soft_reset": (lambda: _mlp(O.BinaryLIF(beta=0.75, threshold=0.5), O.BinaryLIF(beta=0.75, threshold=0.5)),
                       "2-layer MLP, soft-reset LIF (composite LI/Threshold/Scale)"),
    "mlp_integer": (lambda: _mlp(O.IntegerLIF(d=4, norm=4.0, leak=1.0), O.IntegerLIF(d=4, norm=4.0, leak=1.0)),
                    "2-layer MLP, integer IF, D = 4 (composite)"),
}


def spike_train(shape, seed=0) -> torch.Tensor:
    return (torch.rand((T, B) + tuple(shape), generator=torch.Generator().manual_seed(seed)) < 0.5).double()


# ---------------------------------------------------------------------------------------------
# models of the peers' own neurons (their exact difference from NIR's LIF)
# ---------------------------------------------------------------------------------------------


def _mlp_layers(g: Graph, x: np.ndarray, neuron) -> np.ndarray:
    n = g.nodes
    s = x
    for lin, spk in ((n[0], n[1]), (n[2], n[3])):
        s = neuron(s @ lin.op.weight.T + lin.op.bias, float(spk.op.threshold))
    return s


def sinabs_model(g: Graph, x: np.ndarray) -> np.ndarray:
    """sinabs maps nir.LIF to LIFSqueeze: a multi-spike neuron with subtractive reset whose decay
    is exp(-1/tau) with tau counted in *time steps* (tau = 1e-4 -> 0: stateless). Per step it
    emits floor(v / theta) spikes (v = the step's input; NIR's LIF emits [v > theta]), so it fires
    several spikes for v >= 2 theta, and one at v = theta."""
    return _mlp_layers(g, x, lambda v, th: np.maximum(np.floor(v / th), 0.0))


def spyx_model(g: Graph, x: np.ndarray) -> np.ndarray:
    """spyx's LIF decides the spike from the membrane *before* the step's input:
    s_t = [V_{t-1} > theta], V_t = beta V_{t-1} + x_t - theta s_t (beta = 1 - dt/tau = 0 here).
    NIR's LIF fires on the updated membrane, so every spyx layer lags one step and resets by
    subtraction."""

    def lif(current, th):
        v, out = np.zeros(current.shape[1:]), []
        for t in range(current.shape[0]):
            s = (v > th).astype(np.float64)
            v = current[t] - th * s
            out.append(s)
        return np.stack(out)

    return _mlp_layers(g, x, lif)


@dataclass(frozen=True)
class Expect:
    status: str  # exact | model | fails
    why: str = ""
    pattern: str = ""  # fails: regex on "ExcType: message"
    model: Optional[Callable] = None


EXACT = Expect("exact", "NIR's LIF, spike for spike")
_COMPOSITE = {
    "snntorch": Expect("fails", "no mapping for nir.LI/Scale/Threshold inside a sub-graph (snntorch maps only "
                                "LIF/CubaLIF recurrent sub-graphs)", r"ValueError: Unknown node type"),
    "norse": Expect("fails", "norse 1.1's from_nir goes through nirtorch 2.6's deprecated nirtorch.load, which "
                             "raises KeyError on the composite sub-graph's nodes", r"KeyError: 'membrane'"),
    "rockpool": Expect("fails", "no mapping for nested NIR sub-graphs other than a recurrent CubaLIF",
                       r"NotImplementedError: Cannot convert .*NIRGraph"),
    "spyx": Expect("fails", "nested sub-graphs are parsed only as 4-node recurrent LIF cells",
                   r"AssertionError: only 4-node RNN"),
}
#: (network, peer) -> expectation
EXPECTED: Dict[Tuple[str, str], Expect] = {
    ("conv_lif", "snntorch"): EXACT,
    ("conv_lif", "norse"): EXACT,
    ("conv_lif", "sinabs"): Expect("fails", "sinabs bug: `any(node.v_leak)` on a per-neuron parameter array of "
                                            "more than one dimension (a conv layer's LIF)",
                                   r"ValueError: The truth value of an array"),
    ("conv_lif", "rockpool"): Expect("fails", "rockpool has no Conv2d mapping", r"NotImplementedError: Cannot convert .*Conv2d"),
    ("conv_lif", "spyx"): Expect("fails", "spyx's own neuron (see mlp_lif) and its channels-last Flatten, which "
                                          "orders the conv features H, W, C while nir.Affine's weights are C, H, W",
                                 r"^$"),
    ("mlp_lif", "snntorch"): EXACT,
    ("mlp_lif", "norse"): EXACT,
    ("mlp_lif", "sinabs"): Expect("model", "multi-spike subtractive-reset neuron: floor(v/theta) spikes per step",
                                  model=sinabs_model),
    ("mlp_lif", "rockpool"): Expect("fails", "rockpool bug: its nir.LIF import reads `node.tau_mem` (NIR's LIF has "
                                             "`tau`)", r"AttributeError: 'LIF' object has no attribute 'tau_mem'"),
    ("mlp_lif", "spyx"): Expect("model", "spike from the membrane before the step's input (one step late per layer), "
                                         "subtractive reset", model=spyx_model),
}
for _net in ("mlp_soft_reset", "mlp_integer"):
    for _peer, _e in _COMPOSITE.items():
        EXPECTED[(_net, _peer)] = _e
EXPECTED[("mlp_soft_reset", "sinabs")] = Expect(
    "fails", "sinabs maps nir.LI only with r = 1 (NIR's LI with r != 1 is the soft-reset membrane)",
    r"ValueError: `r` must be 1")
EXPECTED[("mlp_integer", "sinabs")] = Expect(
    "fails", "sinabs's from_nir goes through nirtorch 2.6's deprecated nirtorch.load, which raises KeyError on the "
    "composite sub-graph's nodes",
    r"KeyError: 'membrane'")
EXPECTED[("mlp_integer", "norse")] = _COMPOSITE["norse"]


def check(net: str, peer: str, result, reference: np.ndarray, graph: Graph, x: np.ndarray) -> str:
    """'' if ``result`` is what EXPECTED says, else what is wrong."""
    e = EXPECTED[(net, peer)]
    if result.status == "missing":
        return f"{peer} is not installed ({result.detail}): run make peers"
    if e.status == "exact":
        return "" if result.status == "exact" else f"expected exact, got {result.status}: {result.detail}"
    if e.status == "model":
        if result.output is None:
            return f"expected the modelled difference, got {result.status}: {result.detail}"
        if result.status == "exact":
            return "the peer now matches NIR exactly: update EXPECTED"
        want = e.model(graph, x)
        if result.output.shape != want.shape or not np.array_equal(result.output, want):
            return f"output is neither NIR's nor the model of {peer}'s neuron: {result.detail}"
        return ""
    if e.pattern == r"^$":  # runs, but computes something else than NIR and than a simple model
        return "" if result.status == "differs" else f"expected a different output, got {result.status}: {result.detail}"
    if result.status != "fails" or not re.search(e.pattern, result.detail):
        return f"expected failure /{e.pattern}/, got {result.status}: {result.detail}"
    return ""


def cell(net: str, peer: str, result) -> str:
    e = EXPECTED[(net, peer)]
    if e.status == "exact":
        return "exact"
    if e.status == "model":
        return f"runs its own neuron: {e.why}"
    if e.pattern == r"^$":
        return f"wrong output: {e.why}"
    return f"fails: {e.why}"


def render(results: Dict[Tuple[str, str], object], versions: Dict[str, str]) -> str:
    from spikedeploy.exporters.nir_peers import PEERS

    head = "| network | " + " | ".join(f"{p} {versions.get(p, '?')}" for p in PEERS) + " |"
    lines = [head, "|---|" + "---|" * len(PEERS)]
    for net, (_, desc) in NETS.items():
        lines.append(f"| `{net}`: {desc} | " + " | ".join(cell(net, p, results[(net, p)]) for p in PEERS) + " |")
    return "\n".join(lines)


def reference(net: str):
    g = NETS[net][0]()
    x = spike_train(g.inputs[0].shape)
    return g, x, run(g, x).outputs[g.outputs[0]].numpy()
