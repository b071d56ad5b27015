"""torch.fx capture (spikedeploy.capture) on the SDT test model and on bad inputs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikedeploy.capture import MODULE_RULES, capture, register_function_rule, register_module_rule
from spikedeploy.errors import CaptureError
from spikedeploy.ir import ops as O
from spikedeploy.models.layers import _FrozenBatchNorm
from spikedeploy.models.neurons import NEURON_KINDS, MultiSpike, SpikingNeuron
from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking
from spikedeploy.reference import execute

DT = torch.float64
TIME_STEPS = 3  # NI-LIF accepts T <= time_steps


@functools.lru_cache(maxsize=None)
def _sdt(kind: str) -> SDTTestNet:
    model = SDTTestNet(neuron=kind, time_steps=TIME_STEPS, dims=(8, 16), image_size=16)
    init_for_spiking(model, seed=0)
    return model.double().eval()


def _x(T, B=2, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, 3, size, size, dtype=DT, generator=g)


# ---------------------------------------------------------------------------------------------
# SDTTestNet: the captured integer graph is the model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("kind", sorted(NEURON_KINDS))
def test_sdt_integer_run_equals_model_exactly(kind, T):
    model = _sdt(kind)
    x = _x(T, B=2, seed=T)
    graph = capture(model, x)
    # per-neuron outputs as well as the logits: record each SpikingNeuron's output in torch
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, out))
        for name, m in model.named_modules()
        if isinstance(m, SpikingNeuron)
    ]
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        for h in hooks:
            h.remove()
    res = execute(graph, x, "integer")
    (out,) = graph.outputs
    assert res.outputs[out].dtype == DT
    assert torch.equal(res.outputs[out], expected), (res.outputs[out] - expected).abs().max()
    assert set(seen) == {n.name for n in graph.neurons()}
    fired = 0
    for name, value in seen.items():
        rec = res.records[name]
        assert torch.equal(rec.value, value), name
        assert torch.equal(rec.value, rec.q / graph.node(name).op.norm), name
        fired += int(rec.q.sum() > 0)
    assert fired == len(seen)  # init_for_spiking: every neuron layer fires


def test_sdt_capture_with_T2_uses_other_batch():
    """T = 2 makes the capture pick B = 3; the graph still runs on any batch size."""
    model = _sdt("ilif")
    graph = capture(model, _x(2, B=1))
    for B in (1, 2, 5):
        x = _x(2, B=B, seed=B)
        with torch.no_grad():
            assert torch.equal(execute(graph, x).outputs[graph.outputs[0]], model(x))


@pytest.mark.parametrize("kind", ["ilif", "dilif", "binary_lif"])
def test_sdt_graph_structure(kind):
    model = _sdt(kind)
    graph = capture(model, _x(1))
    kinds = [n.op.kind for n in graph.nodes]
    n_neurons = sum(isinstance(m, SpikingNeuron) for m in model.modules())
    assert n_neurons == 14
    assert len(graph.neurons()) == n_neurons
    # membrane shortcuts: sepconv, conv_block, attn, mlp residuals
    assert kinds.count("Add") == 4
    assert kinds.count("AddConstant") == 1
    assert kinds.count("SpikeLinearAttention") == 1
    n_bn = sum(isinstance(m, (nn.modules.batchnorm._BatchNorm, _FrozenBatchNorm)) for m in model.modules())
    assert kinds.count("BatchNorm") == n_bn == 13
    # the position embedding is the AddConstant's value, per step [C, N]
    (pe,) = [n for n in graph.nodes if n.op.kind == "AddConstant"]
    np.testing.assert_array_equal(pe.op.value, model.attn.pos_embed.detach().double().numpy()[0])
    # sources name module paths
    assert graph.node("sepconv.spike1").source == "sepconv.spike1"
    assert graph.node("attn.attn").op.num_heads == 2
    meta = graph.meta_dict()
    assert meta["capture_T"] == 1 and meta["model"] == "SDTTestNet"
    assert graph.inputs[0].shape == (3, 16, 16)
    assert graph.shapes()[graph.outputs[0]] == (10,)


def test_nilif_leaks_are_captured_per_step():
    model = _sdt("nilif")
    graph = capture(model, _x(3))
    op = graph.node("down_spike").op
    expected = tuple(torch.sigmoid(model.down_spike.decay.detach()).tolist())
    assert op.leak == expected and len(op.leak) == TIME_STEPS - 1
    assert op.reset_norm == op.norm == 4.0 and op.label == "NI-LIF"


def test_capture_restores_training_mode():
    model = SDTTestNet(neuron="ilif", dims=(4, 8), image_size=8).double()
    model.train()
    capture(model, torch.randn(1, 2, 3, 8, 8, dtype=DT))
    assert model.training and all(m.training for m in model.modules())


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------


class _WithGELU(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU())

    def forward(self, x):
        T, B, C, H, W = x.shape
        return self.block(x.flatten(0, 1)).reshape(T, B, 4, H, W)


class _WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.spike = MultiSpike(4)
        self.rnn = nn.LSTM(5, 5)

    def forward(self, x):
        out = self.rnn(self.spike(x))
        return out[0]


def test_unsupported_module_gelu():
    with pytest.raises(CaptureError) as e:
        capture(_WithGELU(), torch.randn(1, 2, 3, 4, 4))
    msg = str(e.value)
    assert "'block.1'" in msg
    assert "torch.nn.modules.activation.GELU" in msg
    assert "register_module_rule" in msg


def test_unsupported_module_lstm():
    with pytest.raises(CaptureError) as e:
        capture(_WithLSTM(), torch.randn(2, 2, 5))
    msg = str(e.value)
    assert "'rnn'" in msg and "LSTM" in msg and "register_module_rule" in msg


def _fn_model(fn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.spike = MultiSpike(4)

        def forward(self, x):
            return fn(self.spike(x))

    return M()


@pytest.mark.parametrize(
    "fn, needle",
    [(torch.sigmoid, "sigmoid"), (F.relu, "torch.nn.functional.relu"), (torch.exp, "exp")],
)
def test_unsupported_function(fn, needle):
    with pytest.raises(CaptureError) as e:
        capture(_fn_model(fn), torch.randn(2, 2, 3, 4))
    msg = str(e.value)
    assert needle in msg and "register_function_rule" in msg


def test_unsupported_method():
    with pytest.raises(CaptureError, match=r"\.sum\(\).*register_method_rule"):
        capture(_fn_model(lambda s: s.sum(-1)), torch.randn(2, 2, 3, 4))


@pytest.mark.parametrize(
    "fn",
    [lambda s: s[:, :, :2], lambda s: s[..., 0]],
    ids=["slice", "index-feature"],
)
def test_slicing_an_activation(fn):
    with pytest.raises(CaptureError, match="indexing/slicing an activation|acts on the time axis"):
        capture(_fn_model(fn), torch.randn(2, 2, 3, 4))


def test_indexing_the_time_axis_is_a_select_step():
    """x[t] with T > 1 is a SelectStep (one macro-step); the graph input's T becomes fixed."""
    g = capture(_fn_model(lambda s: s[1].unsqueeze(0)), torch.randn(2, 2, 3, 4))
    assert [n.op.kind for n in g.nodes if n.op.kind == "SelectStep"] == ["SelectStep"]
    assert g.inputs[0].steps == 2


def test_time_axis_ops_are_layout_changes_at_t1():
    """x[0], torch.stack([y]) and .repeat(1, ...) on the time axis only change the layout when T = 1."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.conv(x[0])
            return torch.stack([y], dim=0).repeat(1, 1, 1, 1, 1) * 2.0

    x = torch.randn(1, 3, 2, 4, 4, dtype=DT)
    model = M().double()
    g = capture(model, x)
    with torch.no_grad():
        assert torch.equal(execute(g, x).outputs[g.outputs[0]], model(x))
    assert not any(n.op.kind in ("SelectStep", "StackSteps", "RepeatTime") for n in g.nodes)
    # T = 2: x[0] is a SelectStep (the time-axis ops), still exact
    x2 = torch.randn(2, 3, 2, 4, 4, dtype=DT)
    g2 = capture(model, x2)
    assert [n.op.kind for n in g2.nodes].count("SelectStep") == 1
    with torch.no_grad():
        assert torch.equal(execute(g2, x2).outputs[g2.outputs[0]], model(x2))


@pytest.mark.parametrize(
    "fn",
    [
        lambda s: s.reshape(s.shape[0], -1),  # [T, B*C*N]: T mixed with features
        lambda s: s.flatten(1),  # same, via flatten
        lambda s: s.flatten(0, 2),  # [T*B*C, N]
        lambda s: s.reshape(-1, 2 * s.shape[-1]),  # [T*B*C/2, 2N]
    ],
)
def test_reshape_mixing_time_and_features(fn):
    with pytest.raises(CaptureError, match="never mix them with feature axes"):
        capture(_fn_model(fn), torch.randn(3, 2, 3, 4))


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda s: s.transpose(0, 2), "moves the time or batch axis"),
        (lambda s: s.permute(1, 0, 2, 3), "moves the time or batch axis"),
        (lambda s: s.mean(0), "time or batch axis"),
        (lambda s: s.mean(), "all axes"),
        (lambda s: torch.cat([s, s], dim=1), "time or batch axis"),
        (lambda s: s * s, "Python number"),
        (lambda s: s - s, "not supported"),
        (lambda s: s / 0, "non-zero"),
    ],
)
def test_unsupported_tensor_usage(fn, match):
    with pytest.raises(CaptureError, match=match):
        capture(_fn_model(fn), torch.randn(3, 2, 3, 4))


def test_untraceable_control_flow():
    def fn(s):
        if s.sum() > 0:  # data-dependent Python control flow
            return s
        return s * 2

    with pytest.raises(CaptureError, match="could not trace"):
        capture(_fn_model(fn), torch.randn(3, 2, 3, 4))


def test_example_without_time_batch_axes():
    with pytest.raises(CaptureError, match=r"\[T, B, \.\.\.\]"):
        capture(_fn_model(lambda s: s), torch.randn(3, 4))


def test_neuron_on_merged_layout_is_rejected():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.spike = MultiSpike(4)

        def forward(self, x):
            T, B = x.shape[0], x.shape[1]
            return self.spike(x.flatten(0, 1)).reshape(T, B, -1)

    with pytest.raises(CaptureError, match="merged"):
        capture(M(), torch.randn(3, 2, 5))


def test_multi_input_model_is_rejected():
    class M(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(CaptureError, match="single-input"):
        capture(M(), torch.randn(3, 2, 5))


def test_duplicate_rule_registration_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_module_rule(nn.Conv2d)(lambda *a: None)
    with pytest.raises(ValueError, match="already registered"):
        register_function_rule(torch.flatten)(lambda *a: None)


class _Doubler(nn.Module):
    """A user module with no built-in rule."""

    def forward(self, x):
        return torch.tanh(x) * 2


def test_user_module_rule_makes_module_capturable():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.d = _Doubler()

        def forward(self, x):
            return self.d(x)

    # without a rule the module is traced through and the first unsupported call is named
    with pytest.raises(CaptureError, match=r"tanh.*in module 'd'"):
        capture(M(), torch.randn(2, 2, 3))
    if _Doubler not in MODULE_RULES:

        @register_module_rule(_Doubler)
        def _rule(ctx, m, where, args, kwargs, out):  # pretend tanh is the identity for the test
            return ctx.emit(where, O.Scale(factor=2.0), [args[0]], source=where, layout="TB",
                            shape=tuple(out.shape))

    g = capture(M(), torch.randn(2, 2, 3))
    assert [n.op.kind for n in g.nodes] == ["Scale"] and g.nodes[0].source == "d"


# ---------------------------------------------------------------------------------------------
# bugs found while writing these tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_method", [False, True])
def test_add_with_alpha_is_exact_or_rejected(use_method):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            T, B, C, H, W = x.shape
            y = self.conv(x.flatten(0, 1)).reshape(T, B, C, H, W)
            return x.add(y, alpha=2.0) if use_method else torch.add(x, y, alpha=2.0)

    model = M().double()
    x = torch.randn(2, 2, 2, 3, 3, dtype=DT)
    try:
        g = capture(model, x)
    except CaptureError:
        return  # rejecting alpha is acceptable
    with torch.no_grad():
        assert torch.allclose(execute(g, x).outputs[g.outputs[0]], model(x), rtol=0, atol=1e-12)


def test_divide_by_shape_derived_number():
    class M(nn.Module):
        def forward(self, x):
            T, B, C, H, W = x.shape
            return x / (H * W)

    x = torch.randn(2, 2, 2, 3, 3, dtype=DT)
    g = capture(M(), x)
    assert torch.equal(execute(g, x).outputs[g.outputs[0]], x / 9)


def test_reshape_mixing_batch_with_equal_sized_feature_axis():
    class M(nn.Module):
        def forward(self, x):
            T, B, C, H, W = x.shape
            return x.reshape(T, C, B, H, W) * 1.0

    with pytest.raises(CaptureError):
        capture(M(), torch.randn(1, 4, 2, 3, 3))


def test_capture_restores_every_submodule_mode():
    """A wrapper in training mode around a model in eval mode: capture must not flip the inner
    BatchNorm to training mode (model.train(flag) is recursive)."""

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            T, B, C, H, W = x.shape
            return self.bn(self.conv(x.flatten(0, 1))).reshape(T, B, C, H, W)

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    inner = Inner().eval()
    w = Wrapper(inner)  # a fresh module is in training mode
    capture(w, torch.randn(1, 2, 2, 3, 3))
    assert w.training and not inner.training and not inner.bn.training


def test_the_second_example_run_keeps_only_shapes():
    """capture runs the model twice (batch sizes B and 2B) to tell the batch axis apart; the
    second run needs only its results' shapes, and keeping its tensors doubled the memory of a
    capture (B384-T3's template branch: 14.4 GB resident, 6.4 GB with shapes only, measured)."""
    import torch.fx as fx

    from spikedeploy import capture as C

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    gm = fx.GraphModule(model, C._Tracer().trace(model))
    full, shapes = C._Recorder(gm), C._Recorder(gm, shapes_only=True)
    x = torch.randn(2, 5, 4)
    full.run(x)
    shapes.run(torch.randn(2, 10, 4))
    assert any(isinstance(v, torch.Tensor) for v in full.results.values())
    assert shapes.results and all(isinstance(v, C._Shape) for v in shapes.results.values())
    assert list(shapes.results.values())[-1] == (2, 10, 3)  # the model's output, batch 10
