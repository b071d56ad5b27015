"""The hardware budget (spikedeploy/hardware.py): counts checked against independent counts.

Independent counts: the Lava exporter's unrolled sparse matrices (``exporters.lava.linear_map``,
``conv_matrix``: index arithmetic, not convolutions of masks), the audit's real fan-out maps, the
bundle's neuron table, junction processes and fused-tap nnz, and a greedy packing written here.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from spikedeploy import api, cli
from spikedeploy.audit import fanout_map
from spikedeploy.capture import capture
from spikedeploy.exporters import lava as L
from spikedeploy.hardware import (FORMATS, LOIHI2, PROFILES, BudgetError, Constant, PlacementError, budget_bundle,
                                  budget_graph, get_profile, register_profile)
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.ir.graph import numel, validate
from spikedeploy.passes import ExpandSpikes, default_pipeline

#: bits one synapse takes in the loihi2 profile (8-bit weight + 13-bit target index)
SYN_BITS = 8 + 13


@pytest.fixture(scope="module")
def sdt_bundle(tmp_path_factory):
    loaded = api.build_model("sdt-test", neuron="ilif", timesteps=1)
    x = api.make_inputs(loaded, timesteps=1, num_inputs=1, seed=3)
    graph = default_pipeline().apply(capture(loaded.module, x[:, :1], name="sdt-test"))
    path = L.export(graph, tmp_path_factory.mktemp("budget") / "sdt.lava", encoding="binary")
    return path, L.load(path), budget_bundle(path)


def _matrix(graph: Graph, node: str):
    """The exporter's unrolled matrix of a synapse node (rows: targets), zero weights dropped."""
    shapes = validate(graph)
    n = graph.node(node)
    m, _ = L.linear_map(n.op, shapes[n.inputs[0]], shapes[n.name])
    m = m.tocsr()
    m.eliminate_zeros()
    return m


def test_neurons_equal_the_bundles_neuron_layers(sdt_bundle):
    path, bundle, rep = sdt_bundle
    table = bundle.description["neurons"]
    neurons = {la.name: la for la in rep.layers if la.kind == "neuron"}
    assert set(neurons) == set(table) and len(neurons) == 14
    for name, la in neurons.items():
        assert la.neurons == numel(table[name]["shape"]) > 0, name
    assert rep.totals["neurons"] == sum(la.neurons for la in rep.layers)
    assert rep.host_nodes == ("stem_conv",)  # the first convolution on pixels stays on the host


def test_synapses_equal_unrolled_matrices_and_audit_fanout(sdt_bundle):
    path, bundle, rep = sdt_bundle
    graph = bundle.graph
    shapes = validate(graph)
    checked = 0
    for la in rep.layers:
        assert la.synapses == sum(g.synapses for g in la.groups), la.name
        for g in la.groups:
            if g.op is None:  # one-to-one: every element of the source value
                src = g.source.split(":", 1)[-1]
                assert g.synapses == numel(shapes[src]), (la.name, g.source)
                continue
            node = graph.node(g.op)
            if isinstance(node.op, O.SpikeLinearAttention):  # q reads every kv cell of its head, per token
                (c, n), cv = shapes[node.inputs[0]], shapes[node.name][0]
                assert g.synapses == c * (cv // node.op.num_heads) * n
                assert g.weight_bits == 24  # kv cells hold pair counts in the state width
                continue
            m = _matrix(graph, g.op)
            assert g.synapses == m.nnz > 0, (la.name, g.op)
            fan = fanout_map(node.op, shapes[node.inputs[0]], shapes[node.name])  # the audit's real fan-out
            assert g.synapses == int(fan.sum()), g.op
            assert g.weights == int(np.count_nonzero(node.op.weight)) if hasattr(node.op, "weight") else True
            checked += 1
    assert checked >= 15
    # a single-synapse layer: its max fan-in is the matrix's densest row
    la = rep.layer("conv_block.spike2")
    m = _matrix(graph, "conv_block.conv1")
    assert la.max_fan_in == int(np.diff(m.indptr).max()) == 16 * 9
    # the fused taps of the bundle carry the same nnz
    taps = {t["syn"]["node"]: t["syn"]["nnz"] for p in bundle.description["processes"]
            for ts in p.get("inputs", {}).values() for t in ts if t.get("syn")}
    assert taps["conv_block.conv1"] == la.synapses
    assert la.synaptic_bits == la.synapses * SYN_BITS
    assert la.state_bits == la.neurons * 2 * 24


def test_relays_where_the_lava_compiler_puts_junctions(sdt_bundle):
    path, bundle, rep = sdt_bundle
    junctions = {p["name"] for p in bundle.description["processes"] if p.get("relay")}
    relays = {la.name for la in rep.layers if la.kind == "relay"}
    assert {f"delay:{r}.sum" for r in relays if r.startswith("add")} == junctions and junctions
    # the mean feeds the head's Linear: a synapse output feeding a synapse is held in a relay
    assert "mean" in relays and rep.layer("mean").neurons == 16
    assert rep.layer("head").kind == "readout" and rep.layer("head").synapses == _matrix(bundle.graph, "head").nnz
    # a residual sum of three streams: its relay holds all three synapse groups
    add1 = rep.layer("add_1")
    assert {g.op for g in add1.groups} == {"down_conv", "sepconv.pwconv2.0", "conv_block.conv2"}


def _greedy(costs, per_core, mem_bits):
    cores, used, n = 1, 0.0, 0
    for c in costs:
        if n == per_core or used + c > mem_bits:
            cores, used, n = cores + 1, 0.0, 0
        used, n = used + c, n + 1
    return cores


def test_core_counts_memory_bound_and_neuron_bound(sdt_bundle):
    path, bundle, rep = sdt_bundle
    graph = bundle.graph
    la = rep.layer("conv_block.spike2")  # 2048 neurons, fan-in up to 144: more than one core's memory
    m = _matrix(graph, "conv_block.conv1")
    costs = np.diff(m.indptr) * SYN_BITS + 2 * 24
    assert costs.sum() > LOIHI2.memory_bits_per_core  # the layer needs several cores
    assert la.cores == _greedy(costs, 8192, LOIHI2.memory_bits_per_core) == 4 and la.bound == "memory"
    # a profile with 300 neurons per core: a 1024-neuron layer of small fan-in needs ceil(1024 / 300) cores
    small = dataclasses.replace(LOIHI2, name="test-300", neurons_per_core=Constant(300, "neurons / core", "test", ()))
    r = budget_graph(graph, small)
    q = r.layer("attn.q_spike")
    assert q.neurons == 1024 and q.cores == math.ceil(1024 / 300) == 4 and q.bound == "neurons"
    assert r.totals["cores"] == sum(x.cores for x in r.layers) > rep.totals["cores"]
    t = rep.totals
    weighted = {g.op: g.weights for la in rep.layers for g in la.groups if g.weights}
    assert t["distinct_weights"] == sum(weighted.values()) < t["synapses"]  # kernels are shared over positions
    assert t["chips"] == max(math.ceil(t["cores"] / 128), math.ceil(t["neurons"] / 1e6),
                             math.ceil(t["synapses"] / 1.2e8)) == 1


def test_layer_that_cannot_be_placed_is_one_line_error(sdt_bundle):
    path, bundle, rep = sdt_bundle
    tiny = dataclasses.replace(LOIHI2, name="test-64B",
                               memory_bytes_per_core=Constant(64, "bytes / core", "test", ()))
    with pytest.raises(PlacementError) as e:
        budget_graph(bundle.graph, tiny)
    msg = str(e.value)
    assert "\n" not in msg and "'sepconv.spike1'" in msg and "64 bytes" in msg and "fan-in of 72" in msg
    assert e.value.exit_code == 2


def _wide_fan_in(n_in: int) -> Graph:
    """A host Linear into n_in neurons, all feeding one neuron (fan-in n_in)."""
    rng = np.random.default_rng(0)
    return Graph(
        inputs=(TensorSpec("x", (4,)),),
        nodes=(
            Node("fc0", O.Linear(O.as_param(rng.normal(size=(n_in, 4))), None), ("x",)),
            Node("n0", O.IntegerLIF(d=2, norm=2.0), ("fc0",)),
            Node("fc1", O.Linear(O.as_param(rng.normal(size=(1, n_in)) + 3.0), None), ("n0",)),
            Node("n1", O.IntegerLIF(d=2, norm=2.0), ("fc1",)),
        ),
        outputs=("n1",),
    )


def test_cli_budget_formats_and_exit_codes(sdt_bundle, tmp_path, capsys):
    path, bundle, rep = sdt_bundle
    out = tmp_path / "budget.json"
    assert cli.main(["budget", str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "neurocores" in printed and "open-neuromorphic.org" in printed and "[unconfirmed]" in printed
    data = json.loads(out.read_text())
    assert data["totals"]["synapses"] == rep.totals["synapses"] and len(data["layers"]) == len(rep.layers)
    assert data["profile"]["constants"]["memory_bytes_per_core"]["status"] == "unconfirmed"
    assert cli.main(["budget", str(path), "-o", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["budget", str(path), "-o", str(out), "--overwrite", "--format", "html"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert cli.main(["budget", str(path), "--format", "md"]) == 0
    md = capsys.readouterr().out
    for c in LOIHI2.constants().values():  # every constant printed with every source
        assert f"{c.value:,}" in md and all(s.url in md for s in c.sources)
    assert "UNCONFIRMED" in md and "`conv_block.spike2`" in md
    assert cli.main(["budget", str(tmp_path / "none.lava")]) == 2
    assert cli.main(["budget", str(path), "--profile", "loihi9"]) == 2
    err = capsys.readouterr().err
    assert "no Lava bundle" in err and "unknown hardware profile 'loihi9'" in err
    # a neuron whose fan-in (80,000 synapses x 21 bits) exceeds one Loihi 2 core's 192 KB: exit 2, one line
    wide = L.export(ExpandSpikes("binary").apply(_wide_fan_in(80_000)), tmp_path / "wide.lava", encoding="binary")
    assert cli.main(["budget", str(wide)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "layer 'n1' cannot be placed" in err and "fan-in of 80,000" in err
    ok = budget_bundle(L.export(ExpandSpikes("binary").apply(_wide_fan_in(70_000)), tmp_path / "w7.lava",
                                encoding="binary"))
    assert ok.layer("n1").max_fan_in == 70_000 and ok.layer("n1").cores == 1  # 70,000 x 21 + 48 bits fit


def test_profile_registry_and_constants_are_sourced():
    with pytest.raises(ValueError, match="already registered"):
        register_profile(LOIHI2)
    assert get_profile("loihi2") is LOIHI2 and PROFILES["loihi2"] is LOIHI2
    for name, c in LOIHI2.constants().items():
        assert c.sources and all(s.title and s.date and s.url for s in c.sources), name
    assert LOIHI2.memory_bytes_per_core.status == "unconfirmed"  # secondary sources disagree
    with pytest.raises(ValueError):
        Constant(0, "x", "y", ())
    assert set(FORMATS) == {"md", "json", "html"}


def test_fixed_point_graph_uses_the_plans_weight_bits():
    from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking
    from spikedeploy.passes.quantize import quantize_graph

    torch.manual_seed(0)
    model = SDTTestNet(neuron="ilif", time_steps=1)
    init_for_spiking(model, seed=0)
    model.eval()
    x = torch.randn((1, 2, model.in_channels, model.image_size, model.image_size))
    g = ExpandSpikes("binary").apply(default_pipeline().apply(capture(model, x[:, :1])))
    float_rep = budget_graph(g)
    for bits in (4, 8):
        gq = quantize_graph(g, x, weight_bits=bits)
        rep = budget_graph(gq, source="sdt-fixed")
        assert rep.fixed_point and rep.weight_bits == bits
        names = [la.name for la in rep.layers]
        assert names == [la.name for la in float_rep.layers]
        for la in rep.layers:
            for grp in la.groups:
                node = gq.node(grp.op) if grp.op else None
                if node is not None and isinstance(node.op, (O.Conv2d, O.Conv1d, O.Linear)):
                    assert grp.synapses == _matrix(gq, grp.op).nnz  # quantized zeros are no synapses
                    assert grp.weight_bits == bits
            assert la.synaptic_bits == sum(gr.synapses * (gr.weight_bits + 13) for gr in la.groups)


def test_unlowered_graph_and_unknown_op_are_refused():
    g = _wide_fan_in(8)
    with pytest.raises(BudgetError, match="not lowered"):
        budget_graph(g)
    lowered = ExpandSpikes("graded").apply(g)
    nodes = list(lowered.nodes) + [Node("gate", O.GateSoftmax(), ("n1",))]
    with pytest.raises(BudgetError, match="no rule for op GateSoftmax"):
        budget_graph(lowered.replace_nodes(nodes, ("gate",)))


@pytest.mark.slow
def test_tiny_tracker_search_branch(tmp_path):
    """The bundled tracker's search branch: every neuron layer of the bundle, relays at every junction, the
    memory reads' synapses equal the audit's fan-out (non-zero memory cells per token)."""
    graph = api.prepare_graph(api.build_model("spiketrack-tiny128-t1:search"), timesteps=1, encoding="binary")
    path = L.export(graph, tmp_path / "s.lava", encoding="binary")
    bundle = L.load(path)
    rep = budget_bundle(path)
    neurons = [la for la in rep.layers if la.kind == "neuron"]
    assert len(neurons) == len(bundle.description["neurons"]) == 121
    junctions = {p["name"] for p in bundle.description["processes"] if p.get("relay")}
    assert junctions <= {f"delay:{la.name}.sum" for la in rep.layers if la.kind == "relay"}
    g, shapes = bundle.graph, validate(bundle.graph)
    reads = [(la, gr) for la in rep.layers for gr in la.groups
             if gr.op and isinstance(g.node(gr.op).op, O.MemoryRead)]
    assert len(reads) == 12
    for la, gr in reads:
        node = g.node(gr.op)
        assert gr.synapses == int(fanout_map(node.op, shapes[node.inputs[0]], shapes[node.name]).sum()) > 0
        assert gr.weights == int(np.count_nonzero(node.op.memory))
    t = rep.totals
    assert t["chips"] >= math.ceil(t["cores"] / 128) and t["cores"] >= len(rep.layers)
