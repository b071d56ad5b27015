"""The Lava exporter: rule table, unrolled synapse matrices, delay balancing computed from the
graph, the bundle format (export -> load round trip, atomic writes, clear errors), and
unsupported ops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from spikedeploy.errors import SpikedeployError, UnsupportedOpError
from spikedeploy.exporters import lava as L
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.reference import RULES as REF_RULES, execute


def _p(a):
    return O.as_param(a)


def residual_graph() -> Graph:
    rng = np.random.default_rng(1)
    w = lambda o, i, g=1.0: _p(rng.normal(size=(o, i)) * g / np.sqrt(i))  # noqa: E731
    return Graph(
        inputs=(TensorSpec("x", (5,)),),
        nodes=(
            Node("fc0", O.Linear(w(6, 5, 3), _p(rng.normal(size=6))), ("x",)),
            Node("n0", O.IntegerLIF(d=4, norm=4.0), ("fc0",)),
            Node("skip", O.Linear(w(6, 6, 4), _p(rng.normal(size=6))), ("n0",)),
            Node("fc_a", O.Linear(w(6, 6, 5), None), ("n0",)),
            Node("n1", O.IntegerLIF(d=4, norm=4.0), ("fc_a",)),
            Node("fc_b", O.Linear(w(6, 6, 4), _p(rng.normal(size=6))), ("n1",)),
            Node("add", O.Add(), ("skip", "fc_b")),
            Node("n2", O.IntegerLIF(d=4, norm=4.0), ("add",)),
            Node("out", O.Linear(w(3, 6), None), ("n2",)),
        ),
        outputs=("out",),
    )


# ---------------------------------------------------------------------------------------------
# rule table and synapse matrices
# ---------------------------------------------------------------------------------------------


def test_rules_cover_every_ir_op():
    ops = {c for c in vars(O).values() if isinstance(c, type) and issubclass(c, O.Op) and c is not O.Op}
    assert ops == set(L.RULES)
    assert L.ENCODINGS == ("binary", "graded")


def _ref_linear(op, x):
    """The reference rule's bias-free part on one sample [*s] (as a [1, 1, *s] tensor)."""
    t = torch.as_tensor(x)[None, None]
    return REF_RULES[type(op)].linear(op, t)[0, 0].numpy()


@pytest.mark.parametrize(
    "op, shape",
    [
        (O.Conv2d(_p(np.random.default_rng(0).normal(size=(6, 2, 3, 2))), stride=(2, 1), padding=(1, 2),
                  dilation=(1, 2), groups=2), (4, 7, 6)),
        (O.Conv2d(_p(np.random.default_rng(1).normal(size=(3, 3, 3, 3)) * (np.arange(3) != 1)[None, :, None, None]),
                  padding=(1, 1)), (3, 5, 5)),
        (O.Conv1d(_p(np.random.default_rng(2).normal(size=(4, 3, 3))), stride=2, padding=1), (3, 9)),
        (O.Linear(_p(np.random.default_rng(3).normal(size=(5, 4)))), (3, 4)),
        (O.AvgPool2d(kernel=(2, 3), stride=(2, 2), padding=(1, 1)), (2, 6, 7)),
        (O.MeanReduce(axes=(0, 2)), (3, 4, 5)),
        (O.MeanReduce(axes=(1,), keepdim=True), (3, 4)),
    ],
)
def test_unrolled_matrices_equal_the_reference(op, shape):
    out_shape = op.infer_shape(shape)
    m, bias = L.linear_map(op, shape, out_shape)
    assert bias is None and m.shape == (int(np.prod(out_shape)), int(np.prod(shape)))
    assert (m.data != 0).all(), "zero weights are dropped: only real synapses remain"
    x = np.random.default_rng(9).normal(size=shape)
    np.testing.assert_allclose((m @ x.ravel()).reshape(out_shape), _ref_linear(op, x), rtol=1e-12, atol=1e-12)


def test_conv_matrix_counts_border_fanout():
    # 3x3 kernel of ones, padding 1 on 4x4: a corner input reaches 4 outputs, an inner one 9
    m = L.conv_matrix(np.ones((1, 1, 3, 3)), (1, 4, 4), (1, 1), (1, 1), (1, 1), 1)
    fanout = np.asarray((m != 0).sum(axis=0)).ravel().reshape(4, 4)
    assert fanout[0, 0] == 4 and fanout[1, 1] == 9 and fanout[0, 1] == 6


# ---------------------------------------------------------------------------------------------
# delays and the schedule, computed from the graph
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, window", [("binary", 4), ("graded", 1)])
def test_residual_paths_are_delay_balanced(encoding, window):
    desc, _ = L.compile_graph(residual_graph(), encoding, fuse=False)
    # n0 fires in step 1 (host current injected there) and emits its window from step 1 on;
    # skip/fc_a (Sparse, +1 step) arrive at 2; n1 integrates steps 2..1+window, fires at
    # 1 + window and emits from there; fc_b arrives one step later. So the skip current must wait
    # window steps, and n2 integrates from 2 + window.
    assert desc["period"] == window
    assert desc["neurons"]["n0"]["final_step"] == 1
    assert desc["neurons"]["n1"]["in_start"] == 2 and desc["neurons"]["n1"]["final_step"] == 1 + window
    n2 = desc["neurons"]["n2"]
    assert (n2["in_start"], n2["in_len"], n2["final_step"]) == (2 + window, window, 1 + 2 * window)
    delays = [p for p in desc["processes"] if p["type"] == "delay"]
    assert [d["delay"] for d in delays] == [window]
    (feed,) = [c for c in desc["connections"] if c["dst"] == delays[0]["name"]]
    assert feed["src"] == "sparse:skip"
    into_n2 = sorted(c["src"] for c in desc["connections"] if c["dst"] == n2["proc"])
    assert into_n2 == sorted([delays[0]["name"], "sparse:fc_b"])
    # the bias of skip and fc_b is added once per macro-step by n2
    assert desc["outputs"][0]["final_step"] == n2["final_step"] + window  # + Sparse, + window
    # fused: both synapses and the delay line move into n2, the delay becomes the tap's own delay
    fused, _ = L.compile_graph(residual_graph(), encoding)
    assert not [p for p in fused["processes"] if p["type"] in ("delay", "sparse")]
    (proc,) = [p for p in fused["processes"] if p["name"] == n2["proc"]]
    taps = [(t["syn"]["node"], [(s["src"], s["delay"]) for s in t["sources"]]) for t in proc["inputs"]["a_in"]]
    assert taps == [("skip", [("neuron:n0", 1 + window)]), ("fc_b", [("neuron:n1", 1)])]
    assert fused["neurons"] == desc["neurons"], "fusion changes no timing"
    assert fused["fusion"]["processes_after"] < fused["fusion"]["processes_before"]


def test_delays_of_one_stream_are_chained():
    graph = residual_graph()
    nodes = list(graph.nodes) + [
        Node("n3", O.IntegerLIF(d=4, norm=4.0), ("out",)),
        Node("fc3", O.Linear(_p(np.ones((6, 3))), None), ("n3",)),
        Node("add2", O.Add(), ("skip", "fc3")),  # skip needed again, later
        Node("n4", O.IntegerLIF(d=4, norm=4.0), ("add2",)),
    ]
    desc, _ = L.compile_graph(graph.replace_nodes(nodes, ("n4",)), "binary", fuse=False)
    delays = {p["name"]: p for p in desc["processes"] if p["type"] == "delay"}
    srcs = {c["dst"]: c["src"] for c in desc["connections"] if c["dst"] in delays}
    assert len(delays) == 2
    assert sorted(srcs.values()) == sorted(["sparse:skip", next(n for n in delays if srcs[n] == "sparse:skip")])


# ---------------------------------------------------------------------------------------------
# bundle: export / load
# ---------------------------------------------------------------------------------------------


def test_export_load_round_trip(tmp_path):
    graph = residual_graph()
    path = L.export(graph, tmp_path / "net.lava", encoding="graded")
    assert sorted(os.listdir(path)) == [".spikedeploy-output.json", "arrays.npz", "graph.json"]  # + the marker
    assert sorted(os.listdir(tmp_path)) == ["net.lava"]  # no temporary leftovers
    bundle = L.load(path)
    desc, arrays = L.compile_graph(graph, "graded")
    assert bundle.description == json.loads(json.dumps(desc))
    assert set(bundle.arrays) == set(arrays)
    for k, a in arrays.items():
        np.testing.assert_array_equal(bundle.arrays[k], a)
    with np.load(path / "arrays.npz", allow_pickle=False) as z:  # no pickled objects inside
        assert len(z.files) == len(arrays)
    host = bundle.host_graph()
    assert [n.name for n in host.nodes] == ["fc0"] and host.outputs == ("fc0",)
    np.testing.assert_array_equal(host.nodes[0].op.weight, graph.node("fc0").op.weight)
    assert bundle.encoding == "graded"


def test_integer_graph_is_lowered_and_lowered_graph_must_match():
    from spikedeploy.passes import ExpandSpikes

    lowered = ExpandSpikes("binary").apply(residual_graph())
    assert L.compile_graph(lowered, "binary")[0] == L.compile_graph(residual_graph(), "binary")[0]
    with pytest.raises(SpikedeployError, match="lowered to 'binary'"):
        L.compile_graph(lowered, "graded")
    with pytest.raises(SpikedeployError, match="unknown encoding"):
        L.compile_graph(residual_graph(), "integer")


def test_export_to_existing_path_fails_and_leaves_nothing(tmp_path):
    target = tmp_path / "taken.lava"
    target.write_text("keep me")
    with pytest.raises(SpikedeployError, match="already exists"):
        L.export(residual_graph(), target, encoding="binary")
    assert target.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["taken.lava"]
    folder = L.export(residual_graph(), tmp_path / "b.lava", encoding="binary")
    with pytest.raises(SpikedeployError, match="already exists"):
        L.export(residual_graph(), folder, encoding="graded")
    assert L.load(folder).encoding == "binary"
    L.export(residual_graph(), folder, encoding="graded", overwrite=True)
    assert L.load(folder).encoding == "graded"
    assert sorted(os.listdir(tmp_path)) == ["b.lava", "taken.lava"]


def test_failed_export_leaves_nothing(tmp_path):
    graph = residual_graph()
    nodes = list(graph.nodes) + [Node("bad", _Mystery(), ("n2",))]
    with pytest.raises(UnsupportedOpError):
        L.export(graph.replace_nodes(nodes, ("bad",)), tmp_path / "x.lava", encoding="binary")
    assert os.listdir(tmp_path) == []


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(SpikedeployError, match="no Lava bundle"):
        L.load(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpikedeployError, match="not a Lava bundle"):
        L.load(tmp_path / "file")
    good = L.export(residual_graph(), tmp_path / "good", encoding="binary")
    text = (good / "graph.json").read_text()

    def broken(name, graph_json=None, arrays=b"keep"):
        d = tmp_path / name
        d.mkdir()
        if graph_json is not None:
            (d / "graph.json").write_text(graph_json)
        if arrays == b"keep":
            (d / "arrays.npz").write_bytes((good / "arrays.npz").read_bytes())
        elif arrays is not None:
            (d / "arrays.npz").write_bytes(arrays)
        return d

    with pytest.raises(SpikedeployError, match="graph.json is missing"):
        L.load(broken("a"))
    with pytest.raises(SpikedeployError, match="arrays.npz is missing"):
        L.load(broken("b", text, arrays=None))
    with pytest.raises(SpikedeployError, match="graph.json is corrupt"):
        L.load(broken("c", text[: len(text) // 2]))
    with pytest.raises(SpikedeployError, match="not a spikedeploy Lava bundle"):
        L.load(broken("d", json.dumps({"format": "other"})))
    with pytest.raises(SpikedeployError, match="version"):
        L.load(broken("e", text.replace(f'"version": {L.VERSION}', '"version": 99')))
    with pytest.raises(SpikedeployError, match="arrays.npz is corrupt"):
        L.load(broken("f", text, arrays=b"PK\x03\x04 not a zip"))
    desc = json.loads(text)
    desc["processes"][0]["bias"] = "nope"
    with pytest.raises(SpikedeployError, match="'nope' is missing"):
        L.load(broken("g", json.dumps(desc)))


def test_bundle_runs_in_a_fresh_interpreter_without_model_code(tmp_path):
    """Export the SDT test model, then load and run the bundle in a clean Python that never
    imports the model code: spike counts equal the reference run done here."""
    from spikedeploy import api
    from spikedeploy.capture import capture
    from spikedeploy.passes import default_pipeline

    loaded = api.build_model("sdt-test", neuron="ilif", timesteps=1)
    x = api.make_inputs(loaded, timesteps=1, num_inputs=1, seed=3)
    graph = default_pipeline().apply(capture(loaded.module, x[:, :1], name="sdt-test"))
    path = L.export(graph, tmp_path / "sdt.lava", encoding="binary")
    np.save(tmp_path / "x.npy", x.numpy())
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from spikedeploy.exporters.lava import load
        from spikedeploy.runtimes.lava import run
        r = run(load({str(path)!r}), np.load({str(tmp_path / 'x.npy')!r}))
        assert not any(m.startswith("spikedeploy.models") for m in sys.modules), "model code imported"
        print(json.dumps({{k: v.tolist() for k, v in r.spike_counts.items()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = execute(graph, x, "binary")
    assert len(counts) == 14
    for name, q in counts.items():
        q_ref = ref.neuron_q(name)
        assert q_ref.sum() > 0
        assert torch.equal(torch.tensor(q, dtype=q_ref.dtype), q_ref), name


# ---------------------------------------------------------------------------------------------
# unsupported ops
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Mystery(O.Op):
    """An op no target knows."""

    def infer_shape(self, s):
        return tuple(s)


def test_unsupported_op_names_op_node_and_target():
    graph = residual_graph()
    nodes = list(graph.nodes) + [Node("mystery_node", _Mystery(), ("n2",), source="model.mystery")]
    with pytest.raises(UnsupportedOpError) as info:
        L.compile_graph(graph.replace_nodes(nodes, ("mystery_node",)), "binary")
    msg = str(info.value)
    assert "'lava'" in msg and "_Mystery" in msg and "mystery_node" in msg and "model.mystery" in msg
    assert info.value.exit_code == 2


def test_unsupported_host_op_and_real_valued_attention():
    g = Graph(inputs=(TensorSpec("x", (4,)),), nodes=(Node("m", _Mystery(), ("x",)),
                                                      Node("n", O.IntegerLIF(d=2, norm=2.0), ("m",))),
              outputs=("n",))
    with pytest.raises(UnsupportedOpError, match="'lava'.*_Mystery.*'m'"):
        L.compile_graph(g, "graded")
    rng = np.random.default_rng(0)
    g = Graph(
        inputs=(TensorSpec("x", (4, 3)),),
        nodes=(
            Node("n", O.IntegerLIF(d=2, norm=2.0), ("x",)),
            Node("c", O.Conv1d(_p(rng.normal(size=(4, 4, 1)))), ("n",)),
            Node("att", O.SpikeLinearAttention(num_heads=1, scale=1.0), ("c", "n", "n")),
        ),
        outputs=("att",),
    )
    with pytest.raises(UnsupportedOpError, match="'lava'.*SpikeLinearAttention.*'att'.*spike inputs"):
        L.compile_graph(g, "binary")


def test_oversized_graph_is_refused_before_compiling(tmp_path):
    """Unrolling a network far too large for memory stops with a clear error naming the largest
    layers, before any matrix is built, and writes nothing. A convolution of that size is kept as
    a kernel (``ConvSynapse``) instead and does not count."""
    import numpy as np

    from spikedeploy.errors import UnsupportedOpError
    from spikedeploy.ir import Graph, Node, TensorSpec, ops as O

    lin = Graph(
        inputs=(TensorSpec("x", (2048, 1024)),),
        nodes=(Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",)),
               Node("big_linear", O.Linear(weight=O.as_param(np.ones((1024, 1024)))), ("n0",)),
               Node("n1", O.IntegerLIF(d=4, norm=4.0), ("big_linear",))),
        outputs=("n1",),
    )
    assert L.synapse_upper_bound(lin.nodes[1].op, (2048, 1024), (2048, 1024)) == 2048 * 1024 * 1024
    assert L.check_size(lin) == 0, "a dense layer above the unroll limit is kept as a kernel (MatMulSynapse)"
    g = Graph(
        inputs=(TensorSpec("x", (64, 64, 64)),),
        nodes=(Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",)),
               Node("big_upsample", O.Upsample(size=(1024, 1024)), ("n0",)),
               Node("n1", O.IntegerLIF(d=4, norm=4.0), ("big_upsample",))),
        outputs=("n1",),
    )
    with pytest.raises(UnsupportedOpError, match=r"big_upsample .*use the onnx/nir targets"):
        L.export(g, tmp_path / "big.lava", encoding="binary")
    assert list(tmp_path.iterdir()) == []

    w = O.as_param(np.ones((256, 256, 3, 3)))
    conv = Graph(
        inputs=(TensorSpec("x", (256, 128, 128)),),
        nodes=(Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",)),
               Node("big_conv", O.Conv2d(weight=w, padding=(1, 1)), ("n0",)),
               Node("n1", O.IntegerLIF(d=4, norm=4.0), ("big_conv",))),
        outputs=("n1",),
    )
    assert L.synapse_upper_bound(conv.nodes[1].op, (256, 128, 128), (256, 128, 128)) == 256 * 128 * 128 * 256 * 9
    assert L.check_size(conv) == 0, "a convolution above the unroll limit is kept as a kernel"
    with pytest.raises(UnsupportedOpError, match=r"big_conv"):
        L.check_size(conv, unroll_limit=10**12)
    desc, _ = L.compile_graph(conv, "binary", fuse=False)
    (proc,) = [p for p in desc["processes"] if p["type"] == "conv"]
    assert proc["node"] == "big_conv" and proc["in_shape"] == [256, 128, 128] and proc["out_shape"] == [256, 128, 128]
