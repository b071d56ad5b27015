"""The placement of a Lava bundle's processes (exporters/lava_placement.py): parsing --partitions,
grouping (every process once, contiguous runs of one topological order), what the bundle records,
and the validator's checks of a recorded placement. No Lava run here (see
tests/runtimes/test_lava_partition.py)."""

from __future__ import annotations

import copy
import json

import pytest

from spikedeploy.errors import ArtifactError, ConfigError
from spikedeploy.exporters import lava as lava_export
from spikedeploy.exporters import lava_placement as LP
from spikedeploy.exporters.lava_validate import validate_bundle


@pytest.fixture(scope="module")
def sdt_bundle():
    from spikedeploy import api

    loaded = api.build_model("sdt-test", neuron="ilif", timesteps=1)
    graph = api.prepare_graph(loaded, timesteps=1, encoding="graded")
    return lava_export.compile_graph(graph, "graded")


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("AUTO", "auto"), ("per-layer", "per-layer"),
                                           ("1", 1), (" 8 ", 8), (3, 3), (LP.MAX_PARTITIONS, LP.MAX_PARTITIONS)])
def test_parse_partitions(value, parsed):
    assert LP.parse_partitions(value) == parsed


@pytest.mark.parametrize("value", ["0", 0, -1, "x", "2.5", 2.5, True, None, "", LP.MAX_PARTITIONS + 1, "per_layer"])
def test_bad_partitions_are_one_line_config_errors(value):
    with pytest.raises(ConfigError) as info:
        LP.parse_partitions(value)
    assert isinstance(info.value, LP.PlacementError) and "\n" not in str(info.value)
    assert "--partitions" in str(info.value)


def _order_index(desc):
    return {n: i for i, n in enumerate(LP.topological_order(desc))}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_plan_places_every_process_once_in_contiguous_topological_runs(sdt_bundle, n):
    desc, arrays = sdt_bundle
    names = [p["name"] for p in desc["processes"]]
    pl = LP.plan(desc, n)
    assert pl.partitions == n and len(pl.groups) == n and all(pl.groups)
    flat = [m for g in pl.groups for m in g]
    assert sorted(flat) == sorted(names)  # every process exactly once
    order = LP.topological_order(desc)
    assert flat == order  # contiguous runs of one global step order
    pos = _order_index(desc)
    for c in desc["connections"]:  # the order is topological: a source steps before its reader
        assert pos[c["src"]] < pos[c["dst"]], c


def test_plan_balances_estimated_cost_and_clamps_to_the_process_count(sdt_bundle):
    desc, _ = sdt_bundle
    by_name = {p["name"]: p for p in desc["processes"]}
    costs = [sum(LP.process_cost(by_name[m]) for m in g) for g in LP.plan(desc, 2).groups]
    assert max(costs) <= 2 * min(costs), costs
    many = LP.plan(desc, LP.MAX_PARTITIONS)
    assert many.partitions == len(desc["processes"]) and all(len(g) == 1 for g in many.groups)
    assert LP.plan(desc, "per-layer").groups is None and LP.plan(desc, "per-layer").partitions is None


def test_auto_is_two_partitions_on_two_cpus_or_more_with_its_rule(sdt_bundle):
    desc, _ = sdt_bundle
    for cpus, want in ((1, 1), (2, 2), (16, 2), (128, 2)):
        pl = LP.plan(desc, "auto", cpus=cpus)
        assert pl.requested == "auto" and pl.partitions == want and f"{cpus} CPUs" in pl.rule
    assert LP.auto_partitions(1, cpus=16)[0] == 1  # never more partitions than processes


def test_the_bundle_records_the_placement(sdt_bundle, tmp_path):
    desc, _ = sdt_bundle
    rec = desc["placement"]
    want = LP.auto_partitions(len(desc["processes"]))[0]  # decided for the machine that exported it
    assert rec["requested"] == "auto" and rec["partitions"] == want and rec["rule"].startswith("auto:")
    assert sorted(n for g in rec["groups"] for n in g) == sorted(p["name"] for p in desc["processes"])
    from spikedeploy import api

    loaded = api.build_model("sdt-test", neuron="ilif", timesteps=1)
    graph = api.prepare_graph(loaded, timesteps=1, encoding="binary")
    for req, parts in (("per-layer", None), (3, 3)):
        path = lava_export.export(graph, tmp_path / f"m{req}.lava", encoding="binary", partitions=req)
        written = json.loads((path / lava_export.GRAPH_FILE).read_text())["placement"]
        assert written["requested"] == req and written["partitions"] == parts
        again = lava_export.load(path).description
        assert LP.placement_of(again).to_json() == written  # an explicit placement is used as recorded
    with pytest.raises(LP.PlacementError):
        lava_export.export(graph, tmp_path / "bad.lava", encoding="binary", partitions="0")
    assert not (tmp_path / "bad.lava").exists()


def test_placement_of_a_run(sdt_bundle):
    desc, _ = sdt_bundle
    d = copy.deepcopy(desc)
    assert LP.placement_of(d, "per-layer").groups is None  # placed again as asked
    assert LP.placement_of(d, 2).partitions == 2
    d["placement"] = LP.plan(d, 3).to_json()
    assert LP.placement_of(d).partitions == 3  # as recorded
    d["placement"] = LP.plan(d, "auto").to_json() | {"groups": [[p["name"] for p in d["processes"]]]}
    assert LP.placement_of(d, cpus=4).rule == LP.plan(d, "auto", cpus=4).rule  # auto: decided again here
    del d["placement"]  # a bundle written before placements existed: auto
    assert LP.placement_of(d).requested == "auto"


def _tiny_desc(connections, ports=None):
    procs = [{"name": n, "type": "delay"} for n in "abcd"]
    return {"processes": procs, "connections": [{"src": s, "src_port": "a_out", "dst": t,
                                                 "dst_port": (ports or {}).get((s, t), "a_in")}
                                                for s, t in connections]}


def test_a_cycle_or_a_sum_of_three_cannot_be_partitioned_but_auto_falls_back():
    cyclic = _tiny_desc([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    with pytest.raises(LP.PlacementError, match="cycle.*per-layer"):
        LP.plan(cyclic, 2)
    fallback = LP.plan(cyclic, "auto")
    assert fallback.groups is None and "cycle" in fallback.rule
    three = _tiny_desc([("a", "d"), ("b", "d"), ("c", "d")])
    with pytest.raises(LP.PlacementError, match="more than two streams"):
        LP.plan(three, 1)
    assert LP.plan(three, "auto").groups is None
    two = _tiny_desc([("a", "d"), ("b", "d"), ("c", "a")])
    assert LP.plan(two, 2).groups == (("b", "c"), ("a", "d"))


# ---------------------------------------------------------------------------------------------
# the validator
# ---------------------------------------------------------------------------------------------


def _refused(desc, arrays, *fragments):
    with pytest.raises(ArtifactError) as info:
        validate_bundle(desc, arrays, "Lava bundle t.lava")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("Lava bundle t.lava: graph.json: placement")
    for f in fragments:
        assert f in msg, msg


def test_validator_accepts_recorded_placements(sdt_bundle):
    desc, arrays = sdt_bundle
    for req in ("auto", "per-layer", 1, 2, 5):
        d = dict(desc, placement=LP.plan(desc, req).to_json())
        validate_bundle(d, arrays, "Lava bundle t.lava")
    validate_bundle({k: v for k, v in desc.items() if k != "placement"}, arrays, "t")  # older bundles


def test_validator_refuses_a_bad_placement(sdt_bundle):
    desc, arrays = sdt_bundle
    good = LP.plan(desc, 2).to_json()
    names = [p["name"] for p in desc["processes"]]

    def variant(**change):
        return dict(desc, placement=dict(copy.deepcopy(good), **change))

    _refused(variant(requested="some"), arrays, "requested", "unknown value")
    _refused(variant(requested=0), arrays, "requested", ">= 1")
    _refused(dict(desc, placement=[1, 2]), arrays, "expected an object")
    _refused(variant(groups=[names[:3], names[3:] + ["ghost"]]), arrays, "no process named 'ghost'")
    _refused(variant(groups=[names, names[:1]]), arrays, "placed twice")
    _refused(variant(groups=[names[:3], names[4:]]), arrays, f"process {names[3]!r} is not placed")
    _refused(variant(groups=[names[:3], []]), arrays, "at least 1")
    _refused(variant(partitions=3), arrays, "partitions")
    _refused(variant(groups=None), arrays, "per-layer placement has no partitions")
    order = LP.topological_order(desc)
    _refused(variant(groups=[order[::-1]], partitions=1), arrays, "contradict the connections")
    # a partition that steps a reader before its source (inside a longer partition)
    c0 = desc["connections"][0]
    first, second = c0["src"], c0["dst"]
    rest = [n for n in order if n not in (first, second)]
    crossed = [[second] + rest[: len(rest) // 2] + [first], rest[len(rest) // 2:]]
    _refused(variant(groups=crossed), arrays, "contradict")


def test_validator_refuses_partitions_that_would_wait_for_each_other(sdt_bundle):
    """A = [t2, s1], B = [t1, s2] with connections s1 -> t1 and s2 -> t2: each partition's order is
    fine alone, but A waits in t2 for s2 (in B) while B waits in t1 for s1 (in A): in Lava both
    would wait forever. The validator refuses it before anything runs."""
    desc, arrays = sdt_bundle
    conns = desc["connections"]
    c1, c2 = next((a, b) for a in conns for b in conns
                  if len({a["src"], a["dst"], b["src"], b["dst"]}) == 4)
    a, b = [c2["dst"], c1["src"]], [c1["dst"], c2["src"]]
    rest = [n for n in LP.topological_order(desc) if n not in a + b]
    pl = {"requested": 3, "partitions": 3, "groups": [a, b, rest], "rule": "hand-made"}
    _refused(dict(desc, placement=pl), arrays, "contradict")
