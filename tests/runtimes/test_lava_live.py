"""The live Lava runtime (runtimes/lava_live.py): started once, one run per input.

Every run of a live runtime must equal a fresh :func:`spikedeploy.runtimes.lava.run` of the same
bundle and input bit for bit (spike counts in every layer, outputs, pair events, Lava steps):
each frame is computed from fresh state, nothing carried over. A new memory (set_memory) equals
a fresh run of ``with_memory`` and changes what is computed. A failure ends the runtime with
nothing left behind, and the next run starts a new one.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.exporters import lava as lava_export
from spikedeploy.runtimes import lava as lava_run
from spikedeploy.runtimes.lava_live import LiveRuntime




def assert_same_run(live, fresh):
    assert sorted(live.spike_counts) == sorted(fresh.spike_counts)
    for name, q in fresh.spike_counts.items():
        assert torch.equal(live.spike_counts[name], q), name
    assert sorted(live.outputs) == sorted(fresh.outputs)
    for name, y in fresh.outputs.items():
        assert torch.equal(live.outputs[name], y), f"output {name}"  # bit for bit
    assert live.info["time_steps"] == fresh.info["time_steps"]
    assert live.info["attention_pair_events"] == fresh.info["attention_pair_events"]
    assert live.info["memory_write_pair_events"] == fresh.info["memory_write_pair_events"]


def _records(root: str) -> set:
    return {e for e in os.listdir(root) if e.startswith("spikedeploy-lava-live-")}


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_every_live_run_equals_a_fresh_run(lava_test_graphs, encoding):
    graph, x = lava_test_graphs._sdt("ilif", 1, 2)  # attention, two samples streamed per run
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    inputs = [x * s for s in (1.0, 0.5, 1.7, 1.0)]  # the last repeats the first: no state carried over
    with LiveRuntime(bundle, partitions=2) as live:
        runs = [live.run(xi) for xi in inputs]
        sessions = list(live._sessions)
        assert live.alive
    assert not live.alive and not multiprocessing.active_children()
    totals = []
    for i, (xi, r) in enumerate(zip(inputs, runs)):
        fresh = lava_run.run(bundle, xi, partitions=2)
        assert_same_run(r, fresh)
        assert r.info["live"] == i
        totals.append(sum(int(q.sum()) for q in r.spike_counts.values()))
        assert all(int(q.sum()) > 0 for q in r.spike_counts.values()), "a layer without spikes proves nothing"
    assert len(set(totals[:3])) == 3 and totals[3] == totals[0]  # inputs differ, and the repeat is equal
    assert len(sessions) == runs[0].info["components"] >= 1
    assert runs[0].info["lava_phase_s"]["start"] > 0 and runs[1].info["lava_phase_s"]["start"] == 0


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_time_axis_graph_live_and_a_new_memory(lava_test_graphs, encoding):
    """T = 3 with every time-axis op and a time-varying MemoryRead: live runs equal fresh runs,
    and set_memory equals a fresh run of with_memory (and changes the outputs)."""
    graph = lava_test_graphs.time_axis_graph()
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    reads = [p for p in bundle.description["processes"] if p["type"] == "memory_read"]
    assert len(reads) == 1
    node, old = reads[0]["node"], bundle.array(reads[0]["memory"])
    new = np.random.default_rng(3).normal(size=old.shape) * 2
    g = torch.Generator().manual_seed(9)
    xs = [torch.randn(3, 1, 4, 5, generator=g) * 2 + 1 for _ in range(3)]
    with LiveRuntime(bundle, partitions=1) as live:
        first = live.run(xs[0])
        live.set_memory({node: new})
        swapped = [live.run(xs[1]), live.run(xs[2])]  # the memory stays for every later run
        assert_same_run(first, lava_run.run(bundle, xs[0], partitions=1))
        other = lava_export.with_memory(bundle, {node: new})
        for xi, r in zip(xs[1:], swapped):
            assert_same_run(r, lava_run.run(other, xi, partitions=1))
        before = lava_run.run(bundle, xs[1], partitions=1)
        assert any(not torch.equal(before.outputs[k], v) for k, v in swapped[0].outputs.items()), \
            "the new memory changed nothing: the test would prove nothing"


def test_per_layer_and_other_shapes_are_refused(lava_test_graphs):
    graph, x = lava_test_graphs._sdt("ilif", 1, 2)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded"))
    with pytest.raises(ConfigError, match="per-layer.*cannot stay alive"):
        LiveRuntime(bundle, partitions="per-layer")
    with LiveRuntime(bundle, partitions=1) as live:
        live.run(x)
        with pytest.raises(InputError, match=r"\[T, B\] = \[1, 1\].*runs \[T, B\] = \[1, 2\]"):
            live.run(x[:, :1])
        assert live.alive  # a refused input does not end the runtime


def test_a_failed_frame_ends_the_runtime_and_the_next_run_starts_again(lava_test_graphs, monkeypatch):
    """A partition that cannot read its next frame raises in its Lava process: the run fails with
    one error naming it, every child is ended, the record directory removed; then a run starts a
    new runtime and is exact again."""
    from spikedeploy.lava_compat import LavaProcessError

    graph, x = lava_test_graphs._sdt("ilif", 1, 1)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded"))
    root = lava_run._record_root() or "/tmp"
    before = _records(root)
    live = LiveRuntime(bundle, partitions=1)
    live.run(x)
    assert _records(root) - before
    good = LiveRuntime._write_frame

    def corrupt(self, *a, **k):
        good(self, *a, **k)
        for path in self._frames:
            Path(path).write_bytes(b"not an npz")

    monkeypatch.setattr(LiveRuntime, "_write_frame", corrupt)
    with pytest.raises(LavaProcessError, match="partition0.*cannot read the next frame"):
        live.run(x)
    assert not live.alive and not multiprocessing.active_children()
    assert _records(root) == before
    monkeypatch.setattr(LiveRuntime, "_write_frame", good)
    again = live.run(x * 0.8)
    assert again.info["live"] == 0 and again.info["lava_phase_s"]["start"] > 0
    assert_same_run(again, lava_run.run(bundle, x * 0.8, partitions=1))
    live.close()
    assert not multiprocessing.active_children() and _records(root) == before


def test_use_bundle_takes_the_runtimes_own_bundle_with_other_memories_only(lava_test_graphs):
    """use_bundle (what LavaNetwork calls after with_memory) equals set_memory; a separately
    compiled bundle is refused (it would need other processes)."""
    graph = lava_test_graphs.time_axis_graph()
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded"))
    read = next(p for p in bundle.description["processes"] if p["type"] == "memory_read")
    new = np.random.default_rng(4).normal(size=bundle.array(read["memory"]).shape) * 2
    other = lava_export.with_memory(bundle, {read["node"]: new})
    x = torch.randn(3, 1, 4, 5, generator=torch.Generator().manual_seed(5)) * 2 + 1
    with LiveRuntime(bundle, partitions=1) as live:
        live.run(x)
        live.use_bundle(other)
        assert_same_run(live.run(x), lava_run.run(other, x, partitions=1))
        again = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "graded"))
        with pytest.raises(ConfigError, match="use_bundle takes the runtime's own bundle"):
            live.use_bundle(again)
