"""Partitioned Lava runs (runtimes/lava_partition.py) against per-layer runs and the reference.

A partition is one Lava process hosting the very same process models the per-layer placement runs
as separate Lava processes, so every comparison here is exact: the same spike counts in every
layer and macro-step, the same outputs bit for bit (``torch.equal``), the same attention pair
events and the same number of Lava steps — on the sdt-test model, on a T = 3 graph with every
time-axis op (fused and unfused: delay lines and step gates hosted too), and on the bundled
tiny tracker's template and search branches on crops of the demo clip. Every layer fires in every
comparison (an all-zero comparison proves nothing). Fewer OS processes are counted from ``/proc``
during a run. The CLI and API options and their bad values are at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.cli import main
from spikedeploy.exporters import lava as lava_export
from spikedeploy.exporters.lava_placement import PlacementError
from spikedeploy.reference import execute
from spikedeploy.runtimes import lava as lava_run

#: the full test matrix (SPIKEDEPLOY_FULL_TESTS=1): every per-layer run
FULL = os.environ.get("SPIKEDEPLOY_FULL_TESTS") == "1"

ENCODINGS = ("binary", "graded")
PLACEMENTS = ("per-layer", 1, 2)




def _lava_children() -> int:
    """Live children of this process (Lava's OS processes), multiprocessing's resource tracker not
    counted."""
    me, count = os.getpid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == me and b"resource_tracker" not in cmd:
            count += 1
    return count


def run_counting(bundle, x, partitions):
    """``lava_run.run`` while a thread counts this process's children; returns (run, most children)."""
    seen, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            seen[0] = max(seen[0], _lava_children())
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        r = lava_run.run(bundle, x, partitions=partitions)
    finally:
        done.set()
        t.join()
    return r, seen[0]


def assert_placements_identical(graph, x, encoding, bundle, placements=PLACEMENTS):
    """Runs ``bundle`` in every placement; all equal the first bit for bit and the reference's
    spike counts exactly, every layer fires. Returns the runs by placement."""
    runs = {p: lava_run.run(bundle, x, partitions=p) for p in placements}
    ref = execute(graph, x, encoding)
    neurons = [n.name for n in ref.graph.neurons()]
    first = runs[placements[0]]
    assert sorted(first.spike_counts) == sorted(neurons)
    for name in neurons:
        q_ref = ref.neuron_q(name)
        assert int(q_ref.sum()) > 0, f"no spikes in {name}: the comparison would prove nothing"
        assert torch.equal(first.spike_counts[name], q_ref), name
    for p, r in runs.items():
        for name in neurons:
            assert torch.equal(r.spike_counts[name], first.spike_counts[name]), f"{p}: {name}"
        assert sorted(r.outputs) == sorted(first.outputs)
        for name, y in first.outputs.items():
            assert torch.equal(r.outputs[name], y), f"{p}: output {name} differs"  # bit for bit
        assert r.info["time_steps"] == first.info["time_steps"]  # the same timing in Lava steps
        assert r.info["attention_pair_events"] == first.info["attention_pair_events"]
        assert r.info["memory_write_pair_events"] == first.info["memory_write_pair_events"]
        n = len(bundle.description["processes"])
        if p == "per-layer":
            assert r.info["partitions"] == "per-layer" and r.info["lava_processes"] == n
        else:
            assert r.info["partitions"] == min(p, n) == r.info["lava_processes"]
            assert sum(r.info["partition_sizes"]) == n
        assert r.info["os_processes"] == r.info["lava_processes"] + 2  # + runtime service, shared memory
    return runs


# ---------------------------------------------------------------------------------------------
# small graphs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sdt_model_partitioned_equals_per_layer(lava_test_graphs, encoding):
    graph, x = lava_test_graphs._sdt("ilif", 1, 2)  # two samples streamed through one run
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    runs = assert_placements_identical(graph, x, encoding, bundle, ("per-layer", 1, 2, 5))
    assert runs[1].info["attention_pair_events"] and all(v > 0 for v in runs[1].info["attention_pair_events"].values())
    assert runs[1].info["lava_steps_per_frame"] == runs[1].info["time_steps"] / 2


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_time_axis_graph_partitioned_equals_per_layer(lava_test_graphs, encoding):
    """T = 3 with every time-axis op (SelectStep, RepeatTime, time-varying MemoryRead, StackSteps,
    GateLinear, the host softmax and TemplateGate)."""
    graph = lava_test_graphs.time_axis_graph()
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    kinds = bundle.description["process_counts"]
    assert kinds["host_softmax"] == 1 and kinds["template_gate"] == 1 and kinds["memory_read"] == 1
    x = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(9)) * 2 + 1
    assert_placements_identical(graph, x, encoding, bundle)


def select_residual_graph():
    """T = 3: a template step used alone (SelectStep) next to a residual add whose skip path needs a
    delay line; unfused, Lava's own Sparse, the Delay and the StepGate processes are members."""
    from spikedeploy.ir import Graph, Node, TensorSpec, ops as O

    rng = np.random.default_rng(12)

    def lin(o, i, gain=3.0):
        return O.Linear(O.as_param(rng.normal(size=(o, i)) * gain / np.sqrt(i)), O.as_param(rng.normal(size=o) + 0.5))

    nodes = (
        Node("fc0", lin(6, 5), ("x",)),
        Node("n0", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.8), reset_norm=4.0), ("fc0",)),
        Node("sel", O.SelectStep(2), ("n0",)),
        Node("fc1", lin(6, 6, 5), ("sel",)),
        Node("n1", O.IntegerLIF(d=4, norm=4.0), ("fc1",)),
        Node("fc2", lin(6, 6, 4), ("n1",)),
        Node("n2", O.IntegerLIF(d=4, norm=4.0), ("fc2",)),
        Node("skip", lin(6, 6, 4), ("n1",)),
        Node("fc3", lin(6, 6, 4), ("n2",)),
        Node("add", O.Add(), ("skip", "fc3")),
        Node("n3", O.IntegerLIF(d=4, norm=4.0), ("add",)),
        Node("out", lin(3, 6, 1), ("n3",)),
    )
    return Graph(inputs=(TensorSpec("x", (5,), steps=3),), nodes=nodes, outputs=("out",))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unfused_graph_partitioned_equals_per_layer(encoding):
    graph = select_residual_graph()
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding, fuse=False))
    kinds = bundle.description["process_counts"]
    assert kinds["step_gate"] >= 1 and kinds["delay"] >= 1 and kinds["sparse"] >= 4 and kinds["source"] == 1
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(12)) * 2 + 1
    assert_placements_identical(graph, x, encoding, bundle)


def test_a_port_summing_three_streams_runs_per_layer(lava_test_graphs):
    """The unfused T = 3 graph sums three streams in one port: Lava's InPort adds them in the
    order its compiler lists the processes, which a partition cannot reproduce, so an explicit
    partition count is refused and auto runs it per-layer (exact, as tests/runtimes/test_lava.py
    shows)."""
    graph = lava_test_graphs.time_axis_graph()
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded", fuse=False))
    assert bundle.description["placement"]["groups"] is None
    assert "more than two streams" in bundle.description["placement"]["rule"]
    x = torch.randn(3, 1, 4, 5, generator=torch.Generator().manual_seed(9)) * 2 + 1
    with pytest.raises(PlacementError, match="more than two streams.*per-layer"):
        lava_run.run(bundle, x, partitions=1)


def test_fewer_os_processes_counted_in_proc(lava_test_graphs):
    graph, x = lava_test_graphs._sdt("ilif", 1, 2)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded"))
    n = len(bundle.description["processes"])
    per_layer, seen_per_layer = run_counting(bundle, x, "per-layer")
    # Lava's children: the Lava processes, the runtime service and the shared-memory server
    assert seen_per_layer == n + 2 == per_layer.info["os_processes"], (seen_per_layer, n)
    # a partitioned run is too short to be seen reliably by polling (it was missed in 2 of 3
    # runs): a live runtime keeps the same children between runs, counted while it is alive
    from spikedeploy.runtimes.lava_live import LiveRuntime

    counted = {}
    for p in (1, 2):
        with LiveRuntime(bundle, partitions=p) as live:
            counted[p] = (live.run(x), _lava_children())
    (one, seen_one), (two, seen_two) = counted[1], counted[2]
    assert seen_one == 3 == one.info["os_processes"] and seen_two == 4 == two.info["os_processes"]
    assert _lava_children() == 0
    for name, q in per_layer.spike_counts.items():
        assert torch.equal(one.spike_counts[name], q) and torch.equal(two.spike_counts[name], q)


def test_bundle_placement_is_the_default_and_a_run_may_place_again(lava_test_graphs, tmp_path):
    graph, x = lava_test_graphs._sdt("ilif", 1, 1)
    path = lava_export.export(graph, tmp_path / "m.lava", encoding="graded", partitions=3)
    bundle = lava_export.load(path)
    assert bundle.description["placement"]["partitions"] == 3
    recorded = lava_run.run(bundle, x)
    assert recorded.info["partitions"] == 3 and recorded.info["placement"]["requested"] == 3
    again = lava_run.run(bundle, x, partitions="auto")
    from spikedeploy.exporters.lava_placement import auto_partitions

    auto = auto_partitions(len(bundle.description["processes"]))[0]
    assert auto != 3 and again.info["partitions"] == auto and again.info["placement"]["rule"].startswith("auto:")
    for name, q in recorded.spike_counts.items():
        assert int(q.sum()) > 0 and torch.equal(again.spike_counts[name], q)
    with pytest.raises(PlacementError, match="--partitions"):
        lava_run.run(bundle, x, partitions="none")


def test_a_model_that_cannot_be_hosted(lava_test_graphs, monkeypatch):
    """A process model that is not registered as hostable: an explicit partition count is refused
    naming the process (before Lava starts); auto runs per-layer and says why."""
    from spikedeploy.runtimes import lava_partition

    graph, x = lava_test_graphs._sdt("ilif", 1, 1)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded"))
    monkeypatch.setattr(lava_partition, "hostable_models", lambda: (lava_partition.PyPartitionModel,))
    with pytest.raises(PlacementError, match=r"process '.+': its model \w+ cannot be hosted.*per-layer"):
        lava_run.run(bundle, x, partitions=2)
    r = lava_run.run(bundle, x)
    assert r.info["partitions"] == "per-layer" and "cannot be hosted" in r.info["placement"]["rule"]
    assert sum(int(q.sum()) for q in r.spike_counts.values()) > 0


def test_hostable_registry_rejects_duplicates():
    from lava.proc.sparse.models import PySparseModelFloat

    from spikedeploy.runtimes import lava_partition, lava_procs

    assert set(lava_procs.MODELS.values()) <= set(lava_partition.hostable_models())
    with pytest.raises(ValueError, match="registered as hostable already"):
        lava_partition.register_hostable(PySparseModelFloat)


# ---------------------------------------------------------------------------------------------
# the bundled tiny tracker on crops of the demo clip
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tracker():
    from spikedeploy import api
    from spikedeploy.demo import _search_crops
    from spikedeploy.models.spiketrack import default_tracker_checkpoint
    from spikedeploy.tracking.synth import demo_clip

    ckpt = str(default_tracker_checkpoint())
    frames, gt = demo_clip()
    crops = {"template": _search_crops(frames[:1], gt[:1], 128, 1), "search": _search_crops(frames[5:6], gt[5:6], 128, 1)}
    return {b: (api.build_model(f"spiketrack-tiny128-t1:{b}", checkpoint=ckpt),
                torch.from_numpy(crops[b]).to(torch.float64)) for b in ("template", "search")}


@pytest.mark.slow  # per-layer runs: 10-50 s each on two busy cores
@pytest.mark.parametrize("branch, encoding", [("template", "graded"), ("template", "binary"), ("search", "graded"),
                                              ("search", "binary")])
def test_tiny_tracker_branches_partitioned_equal_per_layer(tiny_tracker, branch, encoding):
    """The bundled tracker's branches: P = 1 and 2 equal the reference exactly in every layer (all
    fire). With SPIKEDEPLOY_FULL_TESTS=1 the per-layer run too, bit for bit (50-100 s per branch;
    not the binary search branch's, which equals the reference in
    tests/tracking/test_tracker_backends.py's tracking); per-layer = partitioned is tested by
    default on the sdt, time-axis and unfused graphs above."""
    from spikedeploy import api

    loaded, x = tiny_tracker[branch]
    graph = api.prepare_graph(loaded, timesteps=1, encoding=encoding)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    per_layer = FULL and (branch, encoding) != ("search", "binary")
    placements = ("per-layer", 1, 2) if per_layer else (1, 2)
    runs = assert_placements_identical(graph, x, encoding, bundle, placements)
    assert runs[1].info["os_processes"] == 3 and len(bundle.description["processes"]) > 100


# ---------------------------------------------------------------------------------------------
# CLI and API
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("partition-cli")
    assert main(["export", "--target", "lava", "--neuron", "ilif", "--spike-encoding", "graded", "--partitions", "2",
                 "-o", str(root / "m.lava")]) == 0
    np.save(root / "x.npy", np.random.default_rng(0).normal(size=(1, 2, 3, 16, 16)))
    return root


def test_cli_export_records_and_run_places_again(cli_bundle, tmp_path, capsys):
    desc = lava_export.load(cli_bundle / "m.lava").description
    assert desc["placement"]["requested"] == 2 and desc["placement"]["partitions"] == 2
    capsys.readouterr()
    outs = {}
    for placement in (None, "per-layer", "1"):
        args = ["run", "--target", "lava", str(cli_bundle / "m.lava"), "--input", str(cli_bundle / "x.npy"),
                "--no-progress", "-o", str(tmp_path / f"{placement}.npz")]
        assert main(args + (["--partitions", placement] if placement else [])) == 0
        out = capsys.readouterr().out
        label = {None: "2", "per-layer": "per-layer", "1": "1"}[placement]
        procs = {None: 2, "per-layer": len(desc["processes"]), "1": 1}[placement]
        assert f"placement {label}: {procs} Lava processes, {procs + 2} OS processes" in out, out
        with np.load(tmp_path / f"{placement}.npz") as z:
            outs[placement] = {k: z[k] for k in z.files}
    for k, v in outs["per-layer"].items():
        assert np.array_equal(outs[None][k], v) and np.array_equal(outs["1"][k], v), k
    assert sum(int(v.sum()) for k, v in outs["1"].items() if k.startswith("spikes/")) > 0


@pytest.mark.parametrize("args", [
    ["export", "--target", "lava", "--neuron", "ilif", "--partitions", "0", "-o", "{tmp}/a.lava"],
    ["export", "--target", "onnx", "--neuron", "ilif", "--partitions", "2", "-o", "{tmp}/a.onnx"],
    ["run", "--target", "lava", "{bundle}/m.lava", "--input", "{bundle}/x.npy", "--partitions", "many"],
    ["run", "--target", "lava", "{bundle}/m.lava", "--input", "{bundle}/x.npy", "--partitions", "-3"],
    ["track", "--clip", "{tmp}/clip.npy", "--init-box", "40,40,30,30", "--target", "lava", "--partitions", "x",
     "-o", "{tmp}/track"],
    ["track", "--clip", "{tmp}/clip.npy", "--init-box", "40,40,30,30", "--target", "torch", "--partitions", "1",
     "-o", "{tmp}/track"],
], ids=["export-zero", "export-onnx", "run-word", "run-negative", "track-word", "track-no-lava"])
def test_cli_bad_partitions_exit_2_with_one_line(cli_bundle, tmp_path, capsys, args):
    np.save(tmp_path / "clip.npy", np.zeros((2, 64, 64, 3), dtype=np.uint8))
    args = [a.format(tmp=tmp_path, bundle=cli_bundle) for a in args]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--partitions" in lines[0] and "Traceback" not in err, err
    assert not any(tmp_path.glob("a.*")) and not (tmp_path / "track").exists()


def test_lava_network_places_both_branches(tmp_path):
    """``LavaNetwork(partitions=)`` (``track --partitions``): both branches' bundles record it and
    run in it; the tracker's result is the same as with auto."""
    from spikedeploy.models.spiketrack import default_tracker_checkpoint, load_spiketrack_checkpoint, spiketrack
    from spikedeploy.tracking.synth import demo_clip
    from spikedeploy.tracking.tracker import SpikeTrackTracker
    from spikedeploy.tracking.backends import LavaNetwork, capture_spiketrack

    model = spiketrack("tiny128", 1)
    load_spiketrack_checkpoint(model, str(default_tracker_checkpoint()))
    graphs = capture_spiketrack(model)
    frames, gt = demo_clip(num_frames=2)
    boxes = {}
    from spikedeploy.exporters.lava_placement import auto_partitions

    for partitions in (3, "auto"):
        net = LavaNetwork(graphs=graphs, partitions=partitions)
        tracker = SpikeTrackTracker(net)
        tracker.initialize(frames[0], gt[0].tolist())
        res = tracker.track(frames[1])
        boxes[partitions] = (res.box, res.score)
        assert net.template_bundle.description["placement"]["requested"] == partitions
        assert net.search_bundle.description["placement"]["requested"] == partitions
        assert net.last_template_run.info["partitions"] == net.last_run.info["partitions"] == (
            3 if partitions == 3 else auto_partitions(len(net.search_bundle.description["processes"]))[0])
        net.close()
    assert boxes[3] == boxes["auto"]
    with pytest.raises(PlacementError):
        LavaNetwork(graphs=graphs, partitions=0)


def test_cli_track_with_partitions(tmp_path):
    from spikedeploy.tracking.synth import demo_clip

    frames, gt = demo_clip(num_frames=2)
    np.save(tmp_path / "clip.npy", frames)
    box = ",".join(f"{v:.1f}" for v in gt[0])
    proc = subprocess.run([sys.executable, "-m", "spikedeploy.cli", "track", "--clip", str(tmp_path / "clip.npy"),
                           "--init-box", box, "--target", "lava", "--partitions", "2", "--no-gif", "--no-progress",
                           "-o", str(tmp_path / "track")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"lava-graded\s+2 frames", proc.stdout), proc.stdout
