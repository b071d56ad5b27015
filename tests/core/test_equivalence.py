"""The equivalence engine: it passes exact lowerings, and it can fail."""

from dataclasses import replace

import json
import numpy as np
import torch

from spikedeploy.equivalence import compare_runs, tie_epsilons, verify_modes
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import execute, run


def _two_layer(w1, w2, d=4, bias2=None):
    """x -> I-LIF -> Linear(w1) -> I-LIF -> Linear(w2, bias2) -> I-LIF."""
    return Graph(
        inputs=(TensorSpec("x", (w1.shape[1],)),),
        nodes=(
            Node("n0", O.IntegerLIF(d=d, norm=float(d)), ("x",)),
            Node("fc1", O.Linear(weight=O.as_param(w1)), ("n0",)),
            Node("n1", O.IntegerLIF(d=d, norm=float(d)), ("fc1",)),
            Node("fc2", O.Linear(weight=O.as_param(w2), bias=None if bias2 is None else O.as_param(bias2)), ("n1",)),
            Node("n2", O.IntegerLIF(d=d, norm=float(d)), ("fc2",)),
        ),
        outputs=("n2",),
    )


def _random_graph(seed=0):
    rng = np.random.default_rng(seed)
    return _two_layer(rng.normal(0, 3, (12, 8)), rng.normal(0, 3, (6, 12)), bias2=rng.normal(0, 0.5, 6))


def test_exact_lowering_passes_with_spikes():
    g = _random_graph()
    x = torch.randn(2, 200, 8, dtype=torch.float64) * 3
    for mode in ("binary", "graded"):
        rep = verify_modes(g, x, "integer", mode)
        assert rep.passed, rep.to_markdown()
        assert rep.free_verdict == "exact"
        assert rep.spikes_occurred and all(l.spikes_a > 0 for l in rep.teacher_forced)
        assert all(l.mismatches == 0 and l.ties == 0 for l in rep.teacher_forced)


def test_broken_lowering_is_caught():
    """A lowering that forgets to fold 1/norm into one synapse must fail, teacher-forced and free."""
    g = _random_graph()
    x = torch.randn(2, 200, 8, dtype=torch.float64) * 3
    ra = execute(g, x, "integer")
    lowered = ExpandSpikes("binary").apply(g)
    nodes = [
        replace(n, op=replace(n.op, weight=O.as_param(n.op.weight * 4.0))) if n.name == "fc2" else n
        for n in lowered.nodes
    ]
    broken = lowered.replace_nodes(nodes)
    rb = run(broken, x)
    rt = run(broken, x, teacher=ra)
    rep = compare_runs(ra, rb, rt)
    assert not rep.passed
    assert rep.free_verdict == "mismatch"
    assert rep.first_divergence == "n2"
    bad = {l.name: l for l in rep.teacher_forced}
    assert bad["n2"].mismatches > 0 and bad["n1"].mismatches == 0
    assert "FAIL" in rep.to_markdown()


def test_teacher_forcing_isolates_the_faulty_layer():
    """Breaking layer n1 changes n2 free-running, but teacher-forced only n1 is wrong."""
    g = _random_graph(1)
    x = torch.randn(1, 300, 8, dtype=torch.float64) * 3
    ra = execute(g, x, "integer")
    lowered = ExpandSpikes("graded").apply(g)
    nodes = [replace(n, op=replace(n.op, d=3)) if n.name == "n1" else n for n in lowered.nodes]
    broken = lowered.replace_nodes(nodes)
    rep = compare_runs(ra, run(broken, x), run(broken, x, teacher=ra))
    tf = {l.name: l for l in rep.teacher_forced}
    fr = {l.name: l for l in rep.free_running}
    assert tf["n1"].mismatches > 0
    assert tf["n2"].mismatches == 0  # fed the reference's n1 spikes
    assert fr["n2"].mismatches > 0  # the error spreads when free-running


def test_boundary_tie_is_counted_as_tie_not_mismatch():
    """A membrane exactly on x.5 in one run and 1e-15 above it in the other is a tie."""
    g = Graph(
        inputs=(TensorSpec("x", (1,)),),
        nodes=(Node("n", O.IntegerLIF(d=4, norm=4.0), ("x",)),),
        outputs=("n",),
    )
    x = torch.full((1, 3, 1), 2.5, dtype=torch.float64)
    ra = run(g, x)
    rb = run(g, x + 2e-15)
    assert int(ra.records["n"].q[0, 0, 0]) == 2 and int(rb.records["n"].q[0, 0, 0]) == 3
    rep = compare_runs(ra, rb, rb)
    layer = rep.teacher_forced[0]
    assert layer.ties == 3 and layer.mismatches == 0
    assert rep.free_verdict == "tie-cascade"
    # a difference of 0.01 is far outside the epsilon: a real mismatch
    rep2 = compare_runs(ra, run(g, x + 0.01), run(g, x + 0.01))
    assert rep2.teacher_forced[0].mismatches == 3 and rep2.free_verdict == "mismatch"


def test_tie_epsilon_is_small_and_scales_with_dtype():
    g = _random_graph()
    x = torch.randn(1, 10, 8, dtype=torch.float64) * 3
    e64 = tie_epsilons(g, run(g, x, dtype=torch.float64))
    e32 = tie_epsilons(g, run(g, x.float(), dtype=torch.float32))
    for k in e64:
        assert 0 < e64[k] < 1e-10
        assert e32[k] > 1e6 * e64[k]


def test_all_zero_comparison_cannot_pass():
    rng = np.random.default_rng(0)
    g = _two_layer(rng.normal(0, 3, (12, 8)), rng.normal(0, 3, (6, 12)))  # no bias: zeros stay zeros
    x = torch.zeros(1, 4, 8, dtype=torch.float64)
    rep = verify_modes(g, x, "integer", "binary")
    assert not rep.spikes_occurred
    assert not rep.passed
    assert "proves nothing" in rep.to_markdown()


def test_report_json_round_trip():
    g = _random_graph()
    rep = verify_modes(g, torch.randn(1, 20, 8, dtype=torch.float64) * 3)
    d = json.loads(rep.to_json())
    assert d["passed"] is True and d["free_verdict"] == "exact"
    assert [l["name"] for l in d["teacher_forced"]] == ["n0", "n1", "n2"]
