"""IR graphs to JSON + arrays and back: identical graphs, clear errors for damaged descriptions."""

import json
from dataclasses import fields

import numpy as np
import pytest
import torch

from spikedeploy import api
from spikedeploy.errors import SpikedeployError
from spikedeploy.ir.serialize import graph_from_json, graph_to_json
from spikedeploy.reference import run


def _same_graph(a, b):
    assert a.inputs == b.inputs and a.outputs == b.outputs and a.meta == b.meta
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for na, nb in zip(a.nodes, b.nodes):
        assert type(na.op) is type(nb.op) and na.inputs == nb.inputs and na.source == nb.source
        for f in fields(na.op):
            va, vb = getattr(na.op, f.name), getattr(nb.op, f.name)
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and np.array_equal(va, vb)
            else:
                assert va == vb, (na.name, f.name)


@pytest.mark.parametrize("kind, T, encoding", [("nilif", 3, "binary"), ("dilif", 2, "graded"), ("binary_lif", 2, "integer")])
def test_round_trip_is_identical(kind, T, encoding):
    loaded = api.build_model("sdt-test", neuron=kind, timesteps=T)
    g = api.prepare_graph(loaded, timesteps=T, encoding=encoding)
    desc, arrays = graph_to_json(g)
    desc = json.loads(json.dumps(desc))  # really JSON
    g2 = graph_from_json(desc, arrays)
    _same_graph(g, g2)
    x = torch.randn(T, 2, 3, 16, 16, dtype=torch.float64)
    r1, r2 = run(g, x), run(g2, x)
    spikes = 0
    for n in g.neurons():
        assert torch.equal(r1.records[n.name].q, r2.records[n.name].q)
        spikes += int(r1.records[n.name].q.sum())
    assert spikes > 0


def test_damaged_descriptions_are_named():
    loaded = api.build_model("sdt-test", neuron="ilif")
    desc, arrays = graph_to_json(api.prepare_graph(loaded, timesteps=1))
    missing = dict(arrays)
    missing.pop(next(iter(missing)))
    with pytest.raises(SpikedeployError, match="missing"):
        graph_from_json(desc, missing, "bundle X")
    bad = json.loads(json.dumps(desc))
    bad["nodes"][0]["op"]["kind"] = "Teleport"
    with pytest.raises(SpikedeployError, match="unknown IR op 'Teleport'"):
        graph_from_json(bad, arrays)
    bad = json.loads(json.dumps(desc))
    del bad["nodes"][1]["inputs"]
    with pytest.raises(SpikedeployError, match="malformed"):
        graph_from_json(bad, arrays)
