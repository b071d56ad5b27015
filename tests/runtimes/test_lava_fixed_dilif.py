"""DI-LIF on Lava ``fixed_pt`` (issue 16 step 3, "Lava … floating and fixed point"): the fixed DI-LIF
(``FixedDynamicIntegerLIF``: D from integer thresholds on the layer's exact integer input sum) runs
in the project's IntegerNeuron process with int64 arithmetic and equals the fixed-point reference
exactly — spike counts, D, integer outputs, saturation — on a small graph and on the event
SpikeTrack's search branch over 10 event frames (D changing between frames, binary and graded),
also frame by frame with the state carried (``open_stream(..., target="lava")``) = one T-step run;
the fixed network against the float one (teacher-forced q and D mismatches, printed); and
``spikedeploy verify --precision fixed --targets reference,lava`` on the event model.

Run time on two busy cores: the small graph ~2 s per Lava run; the event model's cases are marked
slow (capture ~13 s, quantization ~15 s per encoding, a Lava run of the 10 frames ~5 s, the
stream ~10 s)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.errors import ArtifactError
from spikedeploy.exporters import lava as lava_export
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.passes.quantize import quantize_graph
from spikedeploy.reference import run as ref_run
from spikedeploy.runtimes import lava as lava_run
from spikedeploy.streaming import open_stream

FRAMES = 10


def _small(encoding: str):
    """x [4, 6] -> Linear -> leaky DI-LIF -> Linear -> leaky DI-LIF (w < 0) -> Linear -> I-LIF, in
    fixed point (calibrated on its own inputs), and the inputs [T=8, B=3]."""
    rng = np.random.default_rng(4)
    p = O.as_param
    g = Graph(inputs=(TensorSpec("x", (4, 6)),),
              nodes=(Node("l0", O.Linear(weight=p(rng.normal(size=(6, 6)) * 0.6), bias=p(np.full(6, 0.7))), ("x",)),
                     Node("n0", O.DynamicIntegerLIF(d_init=3, gate_w=3.0, gate_b=-0.5, leak=0.5, encoding=encoding),
                          ("l0",)),
                     Node("l1", O.Linear(weight=p(rng.normal(size=(6, 6)) / 3), bias=p(np.full(6, 0.9))), ("n0",)),
                     Node("n1", O.DynamicIntegerLIF(d_init=2, gate_w=-2.0, gate_b=0.8, leak=0.25, encoding=encoding),
                          ("l1",)),
                     Node("l2", O.Linear(weight=p(rng.normal(size=(5, 6)) / 2)), ("n1",)),
                     Node("n2", O.IntegerLIF(d=4, norm=4.0, leak=0.25, encoding=encoding), ("l2",))),
              outputs=("n2",))
    x = torch.randn(8, 3, 4, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1.5
    return quantize_graph(g, x), x


def _assert_equal_to_reference(gq, x, r, *, dilif_layers: int):
    """Lava fixed_pt == the fixed reference: every neuron's q, the outputs, saturation; D moved."""
    ref = ref_run(gq, x)
    assert r.info["select_tag"] == "fixed_pt" and r.info["precision"] == "fixed"
    moved = 0
    for n in gq.neurons():
        q = ref.records[n.name].q
        assert torch.equal(r.spike_counts[n.name], q), f"{n.name}: {int((r.spike_counts[n.name] != q).sum())} differ"
        assert float(q.sum()) > 0, f"{n.name} is silent: the comparison would prove nothing"
        assert r.info["saturated"][n.name] == ref.records[n.name].saturated, n.name
        if isinstance(n.op, O.FixedDynamicIntegerLIF):
            d = ref.records[n.name].d
            moved += int(bool((d[1:] != d[:-1]).any()))  # D changed between consecutive steps
    assert moved == dilif_layers, "D changes between steps in every DI-LIF layer"
    for name, y in ref.outputs.items():
        assert torch.equal(r.outputs[name], y), name
    return ref


def _lava(gq, x, encoding):
    with tempfile.TemporaryDirectory(prefix="spikedeploy-dilif-") as tmp:
        path = lava_export.export(gq, Path(tmp) / "m.lava", encoding=encoding)
        return lava_run.run(lava_export.load(path), x)


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_small_graph_on_lava_fixed_equals_the_fixed_reference(encoding):
    gq, x = _small(encoding)
    assert [type(n.op) for n in gq.neurons()] == [O.FixedDynamicIntegerLIF] * 2 + [O.FixedIntegerLIF]
    assert gq.node("n1").op.sign == -1
    _assert_equal_to_reference(gq, x, _lava(gq, x, encoding), dilif_layers=2)


def test_small_graph_stream_on_lava_and_the_reference_equals_one_run():
    gq, x = _small("binary")
    whole = ref_run(gq, x)
    with open_stream(gq, "reference") as s:
        steps = [s.step(x[t:t + 1]) for t in range(x.shape[0])]
    assert steps[-1].precision == "fixed"
    for n in gq.neurons():
        assert torch.equal(torch.cat([r.spike_counts[n.name] for r in steps]), whole.records[n.name].q), n.name
    with open_stream(gq, "lava", encoding="binary") as s:
        runs = [s.step(x[t:t + 1]) for t in range(x.shape[0])]
    for n in gq.neurons():
        assert torch.equal(torch.cat([r.spike_counts[n.name] for r in runs]), whole.records[n.name].q), n.name
    for o in gq.outputs:
        assert torch.equal(torch.cat([r.outputs[o] for r in runs]), whole.outputs[o]), o
    assert runs[-1].state["n0"].m.dtype == torch.int64
    assert torch.equal(runs[-1].state["n0"].m.to(torch.int64), whole.state["n0"].m)


def test_bundle_validation_names_bad_thresholds(tmp_path):
    import json

    gq, _ = _small("binary")
    path = lava_export.export(gq, tmp_path / "m.lava", encoding="binary")
    desc_file = Path(path) / "graph.json"
    desc = json.loads(desc_file.read_text())
    proc = next(p for p in desc["processes"] if p["type"] == "neuron" and p["neuron"]["kind"] ==
                "fixed_dynamic_integer_lif")
    proc["neuron"]["thresholds"] = proc["neuron"]["thresholds"][::-1]
    desc_file.write_text(json.dumps(desc))
    with pytest.raises(ArtifactError, match="neuron.thresholds: must be non-decreasing"):
        lava_export.load(path)


# ---------------------------------------------------------------------------------------------
# the event SpikeTrack's search branch over 10 event frames
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def event_branch():
    """tests/models/test_spiketrack_event.py's fixture: the tiny search branch with seeded firing
    weights calibrated on a synthetic event clip, captured and folded; the clip as float64 voxels
    [10, 1, 10, 128, 128]."""
    from spikedeploy.capture import capture
    from spikedeploy.events import synthetic_event_sequence, window_frames
    from spikedeploy.models import get_model
    from spikedeploy.models.spiketrack_event import init_event_spiketrack_for_spiking, voxel_input
    from spikedeploy.passes import default_pipeline

    torch.manual_seed(0)
    seq = synthetic_event_sequence(3, "train", num_frames=FRAMES + 1, frame_size=(128, 128))
    search = voxel_input(window_frames(seq.events, seq.frame_times, 5))
    bx, by, bw, bh = seq.boxes[1]
    cx = int(np.clip(round(bx + bw / 2) - 32, 0, 64))
    cy = int(np.clip(round(by + bh / 2) - 32, 0, 64))
    template = search[:1, :, :, cy:cy + 64, cx:cx + 64].contiguous()
    net = get_model("spiketrack-event-tiny:search")
    init_event_spiketrack_for_spiking(net.model, seed=0, template=template, search=search)
    with torch.no_grad():
        net.set_memory(net.model.template_branch(template))
    net.eval()
    g = default_pipeline().apply(capture(net, search, name="spiketrack-event-tiny:search")).with_meta(timesteps=FRAMES)
    return g, search.double()


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_event_search_branch_fixed_on_lava_run_and_stream_equal_the_fixed_reference(event_branch, encoding):
    from spikedeploy.passes import ExpandSpikes

    g, x = event_branch
    lowered = ExpandSpikes(encoding).apply(g)
    gq = quantize_graph(lowered, x)
    assert sum(isinstance(n.op, O.FixedDynamicIntegerLIF) for n in gq.neurons()) == 14
    ref = _assert_equal_to_reference(gq, x, _lava(gq, x, encoding), dilif_layers=14)
    # frame by frame, the state carried, on Lava = the one 10-step run = the fixed reference
    with open_stream(gq, "lava", encoding=encoding) as s:
        runs = [s.step(x[t:t + 1]) for t in range(FRAMES)]
    for n in gq.neurons():
        assert torch.equal(torch.cat([r.spike_counts[n.name] for r in runs]), ref.records[n.name].q), n.name
    for o in gq.outputs:
        assert torch.equal(torch.cat([r.outputs[o] for r in runs]), ref.outputs[o]), o

    # fixed vs float on the same frames: per DI-LIF layer, teacher-forced (each layer fed the float
    # run's upstream spikes) q and D mismatches, and D free-running
    fl = ref_run(lowered, x)
    tf = ref_run(gq, x, teacher=fl)
    plan = gq.meta_dict()["fixed_point"]["layers"]
    rows, q_bad, q_all, d_bad, d_all = [], 0, 0, 0, 0
    for n in gq.neurons():
        if not isinstance(n.op, O.FixedDynamicIntegerLIF):
            continue
        a, b, c = fl.records[n.name], ref.records[n.name], tf.records[n.name]
        qm, dm, df = int((a.q != c.q).sum()), int((a.d != c.d).sum()), int((a.d != b.d).sum())
        q_bad, q_all, d_bad, d_all = q_bad + qm, q_all + a.q.numel(), d_bad + dm, d_all + a.d.numel()
        rows.append(f"{n.name}: q TF {qm}/{a.q.numel()}, D TF {dm}/{a.d.numel()}, D free {df}/{a.d.numel()}, "
                    f"D calibration differs {plan[n.name]['d_differs']}/{plan[n.name]['d_steps']}")
    print(f"\nfixed vs float DI-LIF ({encoding}, 8-bit weights, 24-bit state):\n  " + "\n  ".join(rows)
          + f"\n  total: q TF {q_bad}/{q_all} ({q_bad / q_all:.2%}), D TF {d_bad}/{d_all}")
    # the thresholds reproduce the float gate on the float run's own inputs (measured: no step near
    # a boundary); teacher-forced, D differs only where the 8-bit weights move mu across one
    assert all(plan[n.name]["d_differs"] == 0 for n in gq.neurons() if n.name in plan and "d_differs" in plan[n.name])
    assert d_bad <= d_all // 10 and q_bad <= q_all // 20


@pytest.mark.slow
def test_cli_verify_fixed_point_on_event_frames_reference_and_lava(tmp_path):
    """``spikedeploy verify --model spiketrack-event-tiny:search -T 10 --precision fixed --targets
    reference,lava`` on an ``--input-file`` of synthetic event voxels (it refused DI-LIF before)."""
    from spikedeploy.events import synthetic_event_sequence, window_frames
    from spikedeploy.models.spiketrack_event import voxel_input

    seq = synthetic_event_sequence(3, "train", num_frames=FRAMES + 1, frame_size=(128, 128))
    path = tmp_path / "events.npy"
    np.save(path, voxel_input(window_frames(seq.events, seq.frame_times, 5)).numpy())
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "spikedeploy.cli", "verify", "--model", "spiketrack-event-tiny:search", "-T", str(FRAMES),
         "--input-file", str(path), "--precision", "fixed", "--modes", "binary", "--targets", "reference,lava",
         "--target-inputs", "1", "--no-progress", "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines()]
    for stage in ("capture", "fold+fuse", "binary", "lava"):
        assert any(w[:2] == [stage, "SUCCESS"] for w in lines), (stage, proc.stdout)
    assert any(w[:2] == ["fixed-binary", "MEASURED"] for w in lines), proc.stdout
    assert (out / "report.md").is_file() and "FixedDynamicIntegerLIF" not in proc.stderr
