"""IR ops, graph and validator (spikedeploy.ir)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spikedeploy.errors import GraphValidationError, SpikedeployError
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O, validate
from spikedeploy.reference import execute


def _conv(c_in=2, c_out=3, k=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    kw.setdefault("padding", (1, 1))
    return O.Conv2d(
        weight=O.as_param(rng.normal(size=(c_out, c_in, k, k))),
        bias=O.as_param(rng.normal(size=c_out)),
        stride=kw.pop("stride", (1, 1)),
        **kw,
    )


def _good_graph() -> Graph:
    return Graph(
        inputs=(TensorSpec("x", (2, 5, 5)),),
        nodes=(
            Node("up", O.IntegerLIF(d=4, norm=4.0), ("x",), source="model.up"),
            Node("conv", _conv(), ("up",), source="model.conv"),
            Node("down", O.IntegerLIF(d=2, norm=2.0, leak=0.5), ("conv",)),
            Node("res", O.Add(), ("conv", "down")),
        ),
        outputs=("res",),
    )


def _with_nodes(g: Graph, *nodes) -> Graph:
    return g.replace_nodes(nodes)


# ---------------------------------------------------------------------------------------------
# validator
# ---------------------------------------------------------------------------------------------


def test_valid_graph_shapes():
    shapes = validate(_good_graph())
    assert shapes == {"x": (2, 5, 5), "up": (2, 5, 5), "conv": (3, 5, 5), "down": (3, 5, 5), "res": (3, 5, 5)}
    assert _good_graph().shapes() == shapes


def test_duplicate_node_name():
    g = _good_graph()
    nodes = list(g.nodes) + [Node("conv", O.Scale(2.0), ("res",))]
    with pytest.raises(GraphValidationError, match=r"'conv'.*already used"):
        validate(g.replace_nodes(nodes))


def test_node_name_shadowing_input():
    g = _good_graph()
    with pytest.raises(GraphValidationError, match=r"'x'.*already used"):
        validate(g.replace_nodes([Node("x", O.Scale(2.0), ("x",))], outputs=("x",)))


def test_duplicate_input_name():
    g = Graph(inputs=(TensorSpec("x", (3,)), TensorSpec("x", (3,))), nodes=(), outputs=("x",))
    with pytest.raises(GraphValidationError, match="duplicate graph input name 'x'"):
        validate(g)


def test_read_undefined_value():
    g = _good_graph()
    nodes = list(g.nodes)
    nodes[1] = dataclasses.replace(nodes[1], inputs=("nope",))
    with pytest.raises(GraphValidationError) as e:
        validate(g.replace_nodes(nodes))
    msg = str(e.value)
    assert "'conv'" in msg and "'nope'" in msg and "model.conv" in msg


def test_read_later_node_is_rejected():
    """Node order must be topological: reading a value defined later is an error (no cycles)."""
    g = Graph(
        inputs=(TensorSpec("x", (3,)),),
        nodes=(Node("a", O.Scale(2.0), ("b",)), Node("b", O.Scale(2.0), ("a",))),
        outputs=("b",),
    )
    with pytest.raises(GraphValidationError, match=r"node 'a'.*reads 'b'"):
        validate(g)


@pytest.mark.parametrize(
    "op, inputs",
    [
        (O.Add(), ("x",)),
        (O.Add(), ("x", "x", "x")),
        (O.Scale(2.0), ("x", "x")),
        (O.IntegerLIF(d=2, norm=2.0), ()),
        (O.Concat(axis=0), ()),
        (O.SpikeLinearAttention(num_heads=1, scale=1.0), ("x", "x")),
    ],
)
def test_wrong_arity(op, inputs):
    g = Graph(inputs=(TensorSpec("x", (3, 4)),), nodes=(Node("n", op, inputs),), outputs=("n",))
    with pytest.raises(GraphValidationError, match=r"node 'n'.*expects .* inputs, has"):
        validate(g)


def test_conv_channel_mismatch_names_node():
    g = Graph(
        inputs=(TensorSpec("x", (5, 6, 6)),),
        nodes=(Node("stem", _conv(c_in=2), ("x",), source="net.stem"),),
        outputs=("stem",),
    )
    with pytest.raises(GraphValidationError) as e:
        validate(g)
    msg = str(e.value)
    assert "'stem'" in msg and "Conv2d" in msg and "net.stem" in msg
    assert "2 input channels" in msg and "got 5" in msg


@pytest.mark.parametrize(
    "shape, op",
    [
        ((3, 4), O.Add()),  # Add with unequal shapes (second input below)
        ((4,), O.Linear(weight=O.as_param(np.ones((2, 3))))),
        ((3, 4, 4), O.BatchNorm(*(O.as_param(np.ones(2)) for _ in range(4)))),
        ((3, 4), O.Reshape(shape=(5,))),
        ((3, 4), O.Permute(perm=(0, 0))),
        ((3, 4), O.MeanReduce(axes=(2,))),
        ((3, 4), O.AddConstant(value=O.as_param(np.ones((2, 3, 4))))),
        ((2, 3), O.Conv1d(weight=O.as_param(np.ones((2, 2, 5))))),  # empty output
        ((2, 3, 3), O.Conv2d(weight=O.as_param(np.ones((1, 2, 5, 5))))),  # empty output
    ],
)
def test_shape_mismatch(shape, op):
    inputs = ("x", "y") if isinstance(op, O.Add) else ("x",)
    specs = (TensorSpec("x", shape), TensorSpec("y", (4, 3)))
    g = Graph(inputs=specs, nodes=(Node("bad", op, inputs),), outputs=("bad",))
    with pytest.raises(GraphValidationError, match=rf"node 'bad' \({op.kind}\)"):
        validate(g)


def test_attention_shape_checks():
    g = Graph(
        inputs=(TensorSpec("q", (4, 6)), TensorSpec("v", (4, 5))),
        nodes=(Node("a", O.SpikeLinearAttention(num_heads=2, scale=1.0), ("q", "q", "v")),),
        outputs=("a",),
    )
    with pytest.raises(GraphValidationError, match="attention"):
        validate(g)
    g = Graph(
        inputs=(TensorSpec("q", (4, 6)),),
        nodes=(Node("a", O.SpikeLinearAttention(num_heads=3, scale=1.0), ("q", "q", "q")),),
        outputs=("a",),
    )
    with pytest.raises(GraphValidationError, match="not divisible by 3 heads"):
        validate(g)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("param", ["weight", "bias"])
def test_non_finite_parameter_names_node_and_parameter(bad, param):
    conv = _conv()
    arr = np.array(getattr(conv, param))
    arr.flat[1] = bad
    conv = dataclasses.replace(conv, **{param: O.as_param(arr)})
    g = _good_graph()
    nodes = list(g.nodes)
    nodes[1] = dataclasses.replace(nodes[1], op=conv)
    with pytest.raises(GraphValidationError) as e:
        validate(g.replace_nodes(nodes))
    msg = str(e.value)
    assert "'conv'" in msg and f"parameter {param!r}" in msg and "1 non-finite" in msg


def test_nan_in_batchnorm_statistics():
    bn = O.BatchNorm(
        mean=O.as_param([0.0, np.nan]), var=O.as_param([1.0, 1.0]),
        weight=O.as_param([1.0, 1.0]), bias=O.as_param([0.0, 0.0]),
    )
    g = Graph(inputs=(TensorSpec("x", (2, 3)),), nodes=(Node("bn", bn, ("x",)),), outputs=("bn",))
    with pytest.raises(GraphValidationError, match=r"'bn'.*parameter 'mean'"):
        validate(g)


def test_no_outputs_and_unknown_output():
    g = _good_graph()
    with pytest.raises(GraphValidationError, match="no outputs"):
        validate(dataclasses.replace(g, outputs=()))
    with pytest.raises(GraphValidationError, match="'ghost'"):
        validate(dataclasses.replace(g, outputs=("ghost",)))


@pytest.mark.parametrize("shape", [(0, 3), (3, -1), (2.0, 3)])
def test_bad_input_shape(shape):
    g = Graph(inputs=(TensorSpec("x", shape),), nodes=(), outputs=("x",))
    with pytest.raises(GraphValidationError, match="bad shape"):
        validate(g)


def test_validation_error_is_a_spikedeploy_error():
    assert issubclass(GraphValidationError, SpikedeployError)


def test_node_with_a_non_op_is_a_validation_error():
    g = Graph(inputs=(TensorSpec("x", (3,)),), nodes=(Node("n", "relu", ("x",)),), outputs=("n",))
    with pytest.raises(GraphValidationError, match="not an IR op"):
        validate(g)


def test_reshape_to_negative_dims_is_rejected():
    g = Graph(inputs=(TensorSpec("x", (3, 4)),), nodes=(Node("r", O.Reshape(shape=(-1, -12)), ("x",)),),
              outputs=("r",))
    with pytest.raises(GraphValidationError, match="'r'"):
        validate(g)


def test_avgpool_empty_output_is_rejected():
    op = O.AvgPool2d(kernel=(3, 3), stride=(1, 1))
    g = Graph(inputs=(TensorSpec("x", (1, 2, 2)),), nodes=(Node("p", op, ("x",)),), outputs=("p",))
    with pytest.raises(GraphValidationError, match="'p'"):
        validate(g)


def test_mean_reduce_repeated_axes_rejected():
    g = Graph(inputs=(TensorSpec("x", (3, 4)),), nodes=(Node("m", O.MeanReduce(axes=(0, 0)), ("x",)),),
              outputs=("m",))
    with pytest.raises(GraphValidationError, match="'m'"):
        validate(g)


# ---------------------------------------------------------------------------------------------
# neuron op construction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [0, 2.5, -1, True, "4", None])
def test_integer_lif_bad_firing_limit(d):
    with pytest.raises(ValueError, match="firing limit D"):
        O.IntegerLIF(d=d, norm=1.0)


@pytest.mark.parametrize("d", [0, 2.5, -1, True])
def test_dynamic_lif_bad_d_init(d):
    with pytest.raises(ValueError, match="d_init"):
        O.DynamicIntegerLIF(d_init=d, gate_w=1.0, gate_b=0.0)


def test_integer_lif_accepts_numpy_int():
    assert O.IntegerLIF(d=np.int64(3), norm=3.0).window == 3


@pytest.mark.parametrize(
    "make",
    [
        lambda e: O.IntegerLIF(d=4, norm=4.0, encoding=e),
        lambda e: O.DynamicIntegerLIF(d_init=3, gate_w=1.0, gate_b=0.0, encoding=e),
        lambda e: O.BinaryLIF(beta=0.5, encoding=e),
    ],
)
def test_unknown_encoding(make):
    with pytest.raises(ValueError, match="unknown spike encoding 'unary'"):
        make("unary")
    for enc in (None,) + O.ENCODINGS:
        assert make(enc).encoding == enc


def test_unknown_rounding_and_bad_threshold():
    with pytest.raises(ValueError, match="rounding"):
        O.IntegerLIF(d=4, norm=4.0, rounding="half_odd")
    with pytest.raises(ValueError, match="threshold"):
        O.BinaryLIF(beta=0.5, threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        O.BinaryLIF(beta=0.5, threshold=float("nan"))


def test_dynamic_lif_unknown_rounding():
    with pytest.raises(ValueError, match="rounding"):
        O.DynamicIntegerLIF(d_init=3, gate_w=1.0, gate_b=0.0, rounding="bogus")


@pytest.mark.parametrize("kw", [dict(norm=0.0), dict(norm=float("nan")), dict(norm=4.0, leak=float("nan")),
                                dict(norm=4.0, reset_norm=0.0)])
def test_integer_lif_bad_scalars_rejected(kw):
    with pytest.raises((ValueError, GraphValidationError)):
        op = O.IntegerLIF(d=4, **kw)
        validate(Graph(inputs=(TensorSpec("x", (3,)),), nodes=(Node("n", op, ("x",)),), outputs=("n",)))


def test_neuron_windows_and_norms():
    assert O.IntegerLIF(d=5, norm=1.0).window == 5
    di = O.DynamicIntegerLIF(d_init=3, gate_w=1.0, gate_b=0.0)
    assert (di.d, di.window, di.norm) == (6, 6, 3.0)
    b = O.BinaryLIF(beta=0.5)
    assert (b.d, b.window, b.norm) == (1, 1, 1.0)
    assert all(op.is_neuron for op in (O.IntegerLIF(d=1, norm=1.0), di, b))
    assert not O.Conv2d.is_neuron


# ---------------------------------------------------------------------------------------------
# summary, immutability, lookup
# ---------------------------------------------------------------------------------------------


def test_summary_lists_every_node():
    g = _good_graph()
    s = g.summary()
    lines = s.splitlines()
    assert lines[0].startswith("inputs: x[2, 5, 5]")
    assert lines[-1] == "outputs: res"
    for n in g.nodes:
        line = next(l for l in lines if l.strip().startswith(n.name + " "))
        assert n.op.kind in line and str(list(g.shapes()[n.name])) in line


def test_summary_of_invalid_graph_raises():
    g = _good_graph()
    with pytest.raises(GraphValidationError):
        dataclasses.replace(g, outputs=("ghost",)).summary()


def test_ops_are_frozen():
    conv = _conv()
    with pytest.raises(dataclasses.FrozenInstanceError):
        conv.stride = (2, 2)
    lif = O.IntegerLIF(d=4, norm=4.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lif.d = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        O.Scale(2.0).factor = 3.0
    g = _good_graph()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes[0].name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.outputs = ()


def test_parameters_are_read_only_float64():
    p = O.as_param([[1, 2], [3, 4]])
    assert p.dtype == np.float64 and not p.flags.writeable
    with pytest.raises(ValueError):
        p[0, 0] = 5.0
    src = np.ones(3)
    q = O.as_param(src)
    src[0] = 7.0
    assert q[0] == 1.0  # a copy, not a view
    conv = _conv()
    for name, arr in conv.arrays().items():
        assert name in ("weight", "bias")
        assert arr.dtype == np.float64 and not arr.flags.writeable
        with pytest.raises(ValueError):
            arr.flat[0] = 0.0


def test_op_constructor_freezes_arrays():
    w = np.ones((2, 2, 1, 1))
    op = O.Conv2d(weight=w)
    w[0, 0, 0, 0] = 5.0
    assert op.weight[0, 0, 0, 0] == 1.0 and not op.weight.flags.writeable


def test_graph_lookup_helpers():
    g = _good_graph()
    assert g.node("conv").op.kind == "Conv2d"
    with pytest.raises(KeyError, match="ghost"):
        g.node("ghost")
    cons = g.consumers()
    assert [n.name for n in cons["conv"]] == ["down", "res"]
    assert cons["res"] == [] and [n.name for n in cons["x"]] == ["up"]
    assert [n.name for n in g.neurons()] == ["up", "down"]
    g2 = g.with_meta(model="m", capture_T=2)
    assert g2.meta_dict() == {"model": "m", "capture_T": 2} and g.meta == ()


def test_executing_invalid_graph_raises_validation_error():
    g = dataclasses.replace(_good_graph(), outputs=("ghost",))
    with pytest.raises(GraphValidationError):
        execute(g, torch.zeros(1, 1, 2, 5, 5, dtype=torch.float64))
