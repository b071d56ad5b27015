"""The two full-size SpikeVideoFormer configurations (issue 17, "must hold"): 15M and 55M build
with the seed's parameter counts, capture, and verify on one short clip -- capture = PyTorch bit for
bit, BatchNorm folded and chains fused, binary and graded spikes = the integer graph in every
neuron layer -- with random weights that fire.

The clip is short and small (T = 2 frames of 64 x 64 pixels, 4 x 4 tokens per frame in the
transformer stages instead of 224's 14 x 14): the layers, widths and weights are the full models'
(the parameter count does not depend on the resolution), only the number of tokens is smaller,
which keeps the two verifications at about a minute on two cores."""

from __future__ import annotations

import pytest

from spikedeploy.models.spikevideoformer import PAPER_PARAMETERS, spikevideoformer
from spikedeploy.verification import verify

pytestmark = pytest.mark.slow

#: neuron layers: 4 per CNN block (1 + 1 + 2), 4 downsamplings, 7 per transformer block (6 + 2), the head
NEURON_LAYERS = 4 * 4 + 4 + 7 * 8 + 1


@pytest.mark.parametrize("family", ["15m", "55m"])
def test_full_size_builds_captures_and_verifies_on_a_short_clip(family):
    params = sum(p.numel() for p in spikevideoformer(family).parameters())
    assert abs(params - PAPER_PARAMETERS[family]) / PAPER_PARAMETERS[family] < 0.005, params
    rep = verify(f"spikevideoformer-{family}", timesteps=2, num_inputs=1, model_kwargs={"resolution": 64})
    assert rep.passed, rep.to_markdown()
    assert [s.name for s in rep.stages] == ["capture", "fold+fuse", "binary", "graded"]
    assert rep.neuron_layers == NEURON_LAYERS
    for stage in rep.stages[2:]:  # the lowerings compare every neuron layer's spikes with the integer graph's
        layers = stage.report.teacher_forced
        assert len(layers) == NEURON_LAYERS
        assert all(layer.mismatches == 0 for layer in layers)
        fired = [layer for layer in layers if layer.spikes_a > 0]
        assert len(fired) >= NEURON_LAYERS - 2, [layer.name for layer in layers if layer.spikes_a == 0]
