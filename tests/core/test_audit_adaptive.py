"""The adaptive spike budget (issue 16, step 5): FixDynamicLimit (DI-LIF -> I-LIF at D_init) and the
audit's per-step D, input density and SynOps against the fixed-D network, on the event SpikeTrack's
search branch over 10 synthetic event frames."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from spikedeploy.audit import audit_graph
from spikedeploy.capture import capture
from spikedeploy.ir import ops as O
from spikedeploy.models import get_model
from spikedeploy.models.spiketrack_event import init_event_spiketrack_for_spiking, voxel_input
from spikedeploy.passes import ExpandSpikes, FixDynamicLimit, default_pipeline
from spikedeploy.reference import run

FRAMES = 10


@pytest.fixture(scope="module")
def event_graph():
    from spikedeploy.events import synthetic_event_sequence, window_frames

    seq = synthetic_event_sequence(3, "train", num_frames=FRAMES + 1, frame_size=(128, 128))
    search = voxel_input(window_frames(seq.events, seq.frame_times, 5))
    x, y, w, h = seq.boxes[1]
    cx = int(np.clip(round(x + w / 2) - 32, 0, 64))
    cy = int(np.clip(round(y + h / 2) - 32, 0, 64))
    template = search[:1, :, :, cy:cy + 64, cx:cx + 64].contiguous()
    torch.manual_seed(0)
    net = get_model("spiketrack-event-tiny:search")
    init_event_spiketrack_for_spiking(net.model, seed=0, template=template, search=search)
    with torch.no_grad():
        net.set_memory(net.model.template_branch(template))
    net.eval()
    g = default_pipeline().apply(capture(net, search, name="spiketrack-event-tiny:search")).with_meta(timesteps=FRAMES)
    return g, search.double()


def _dilif(graph):
    return [n for n in graph.nodes if isinstance(n.op, O.DynamicIntegerLIF)]


def test_fixed_limit_is_the_dilif_with_its_gate_at_zero(event_graph):
    g, x = event_graph
    fixed = FixDynamicLimit().apply(g)
    assert not _dilif(fixed) and len(_dilif(g)) == 14
    relabelled = [n for n in fixed.nodes if isinstance(n.op, O.IntegerLIF) and n.op.label == "I-LIF (D = D_init)"]
    assert len(relabelled) == 14
    # DI-LIF with w = b = 0: D = round(2 sigmoid(0) D_init) = D_init at every step and sample
    gated = replace(g, nodes=tuple(replace(n, op=replace(n.op, gate_w=0.0, gate_b=0.0))
                                   if isinstance(n.op, O.DynamicIntegerLIF) else n for n in g.nodes))
    a, b = run(fixed, x, dtype=torch.float64), run(gated, x, dtype=torch.float64)
    for n in _dilif(g):
        assert torch.equal(a.records[n.name].q, b.records[n.name].q), n.name
        assert torch.all(torch.as_tensor(b.records[n.name].d) == n.op.d_init)
    assert all(torch.equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
    assert sum(float(a.records[n.name].q.sum()) for n in _dilif(g)) > 0  # spikes occurred
    # lowered graphs too: the binary window shrinks to D_init, the spikes stay the same
    lo = FixDynamicLimit().apply(ExpandSpikes("binary").apply(g))
    assert all(n.op.window == n.op.d for n in lo.neurons() if n.name in {m.name for m in _dilif(g)})
    c = run(lo, x, dtype=torch.float64)
    for n in _dilif(g):
        assert torch.equal(c.records[n.name].q, a.records[n.name].q), n.name


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_audit_reports_the_adaptive_budget_against_a_fixed_d(event_graph, encoding):
    g, x = event_graph
    rep = audit_graph(g, x, encoding=encoding, model="spiketrack-event-tiny:search")
    a = rep.adaptive
    assert a is not None and len(a["layers"]) == 14
    d = np.array([a["d_per_step"][n] for n in a["layers"]])
    assert d.shape == (14, FRAMES) and np.all((d >= 1) & (d <= 12))
    assert any(len(np.unique(row)) > 1 for row in d)  # D changed between frames
    # per-step SynOps of the DI-LIF run sum to the report's per-frame total of the spike layers
    assert abs(sum(a["synops_per_step"]) - rep.totals["per_frame"]["measured_synops"]) <= 1e-9 * a["synops_per_frame"]
    # the fixed-D numbers are the audit of the FixDynamicLimit graph
    ref = audit_graph(FixDynamicLimit().apply(g), x, encoding=encoding)
    assert ref.adaptive is None
    assert a["fixed_synops_per_frame"] == pytest.approx(ref.totals["per_frame"]["measured_synops"], rel=1e-12)
    assert a["synops_per_frame"] > 0 and a["fixed_synops_per_frame"] > 0
    assert a["synops_per_frame"] != a["fixed_synops_per_frame"]
    flat = x.reshape(FRAMES, -1)
    assert a["input_density"] == pytest.approx(flat.mean(dim=1).tolist(), rel=1e-12)
    assert a["input_active"] == pytest.approx((flat != 0).double().mean(dim=1).tolist(), rel=1e-12)
    md = rep.to_markdown()
    assert "## Adaptive spike budget" in md and md.count("\n| ") >= FRAMES
    assert json.loads(rep.to_json())["adaptive"]["layers"] == a["layers"]
    html = rep.to_html()
    assert "Adaptive spike budget" in html and html.count("data:image/png;base64") >= 2


def test_no_adaptive_section_without_dilif_or_when_off(event_graph):
    g, x = event_graph
    assert audit_graph(g, x, compare_fixed_d=False).adaptive is None
    fixed = FixDynamicLimit().apply(g)
    rep = audit_graph(fixed, x)
    assert rep.adaptive is None and "Adaptive spike budget" not in rep.to_markdown()


def test_fixed_point_graph_gets_the_adaptive_budget_too(event_graph):
    """Loihi 2 fixed point: FixedDynamicIntegerLIF's D per step from its integer thresholds, against the
    FixedIntegerLIF with d = D_init (FixDynamicLimit on the fixed graph)."""
    from spikedeploy.passes.quantize import quantize_graph

    g, x = event_graph
    gq = quantize_graph(ExpandSpikes("graded").apply(g), x)
    fixed_dilif = [n for n in gq.nodes if isinstance(n.op, O.FixedDynamicIntegerLIF)]
    assert len(fixed_dilif) == 14
    fq = FixDynamicLimit().apply(gq)
    assert not any(isinstance(n.op, O.FixedDynamicIntegerLIF) for n in fq.nodes)
    assert all(isinstance(fq.node(n.name).op, O.FixedIntegerLIF) and fq.node(n.name).op.d == n.op.d_init
               for n in fixed_dilif)
    rep = audit_graph(gq, x, encoding="graded")
    a = rep.adaptive
    assert rep.precision == "fixed" and a is not None and len(a["layers"]) == 14
    d = np.array([a["d_per_step"][n] for n in a["layers"]])
    assert any(len(np.unique(row)) > 1 for row in d)
    ref = audit_graph(fq, x, encoding="graded")
    assert ref.adaptive is None and ref.totals["per_frame"]["measured_synops"] > 0
    assert a["fixed_synops_per_frame"] == pytest.approx(ref.totals["per_frame"]["measured_synops"], rel=1e-12)
