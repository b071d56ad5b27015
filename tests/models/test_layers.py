"""FrozenBatchNorm and SpikeLinearAttention against explicit formulas."""

import pytest
import torch

from spikedeploy.models.layers import FrozenBatchNorm1d, FrozenBatchNorm2d, SpikeLinearAttention


def _fill_bn(bn, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
    bn.bias.copy_(torch.randn(n, generator=g))
    bn.running_mean.copy_(torch.randn(n, generator=g))
    bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)


@pytest.mark.parametrize("cls,shape", [(FrozenBatchNorm2d, (2, 3, 4, 5)), (FrozenBatchNorm1d, (2, 3, 7))])
def test_frozen_bn_formula(cls, shape):
    bn = cls(3)
    _fill_bn(bn)
    assert {n for n, _ in bn.named_buffers()} == {"weight", "bias", "running_mean", "running_var"}
    assert list(bn.parameters()) == []
    x = torch.randn(*shape, dtype=torch.float64)
    bn = bn.double()
    view = (1, -1) + (1,) * (len(shape) - 2)
    ref = (x - bn.running_mean.reshape(view)) / torch.sqrt(bn.running_var.reshape(view) + 1e-5) * \
        bn.weight.reshape(view) + bn.bias.reshape(view)
    assert torch.allclose(bn(x), ref, rtol=1e-12, atol=1e-12)
    scale, shift = bn.scale_shift()
    assert torch.allclose(x * scale.reshape(view) + shift.reshape(view), ref)
    with pytest.raises(ValueError, match=cls.__name__):
        bn(torch.randn(2, 3))


def test_frozen_bn_matches_torch_bn_in_eval_and_loads_its_state_dict():
    ref = torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 1.5)
    frozen = FrozenBatchNorm2d(4)
    frozen.load_state_dict(ref.state_dict())  # num_batches_tracked is dropped
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(frozen(x), ref(x), atol=1e-6)


def _per_head_reference(q, k, v, heads, scale):
    T, B, C, N = q.shape
    Cv = v.shape[2]
    out = torch.zeros(T, B, Cv, N, dtype=q.dtype)
    ch, cv = C // heads, Cv // heads
    for t in range(T):
        for b in range(B):
            for h in range(heads):
                Q = q[t, b, h * ch:(h + 1) * ch].T  # [N, C/h]
                K = k[t, b, h * ch:(h + 1) * ch].T
                V = v[t, b, h * cv:(h + 1) * cv].T  # [N, Cv/h]
                out[t, b, h * cv:(h + 1) * cv] = (scale * (Q @ (K.T @ V))).T
    return out


def test_spike_linear_attention_matches_per_head_formula():
    g = torch.Generator().manual_seed(0)
    spikes = lambda *s: torch.randint(0, 5, s, generator=g).double() / 4  # noqa: E731
    q, k, v = spikes(2, 3, 8, 10), spikes(2, 3, 8, 10), spikes(2, 3, 12, 10)
    assert (q > 0).any() and (k > 0).any() and (v > 0).any()
    attn = SpikeLinearAttention(num_heads=4, scale=0.7)
    assert list(attn.parameters()) == [] and attn.num_heads == 4 and attn.scale == 0.7
    out = attn(q, k, v)
    assert out.shape == (2, 3, 12, 10)
    assert torch.allclose(out, _per_head_reference(q, k, v, 4, 0.7), rtol=1e-12)
    assert (out > 0).any()


def test_spike_linear_attention_rejects_bad_shapes():
    attn = SpikeLinearAttention(num_heads=3, scale=1.0)
    with pytest.raises(ValueError, match="num_heads"):
        attn(torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 6, 5))
    with pytest.raises(ValueError, match="shape"):
        attn(torch.zeros(1, 1, 6, 5), torch.zeros(1, 1, 6, 4), torch.zeros(1, 1, 6, 5))
    with pytest.raises(ValueError, match="num_heads"):
        SpikeLinearAttention(num_heads=0, scale=1.0)
