"""The NIR peer matrix (issue 18): every NIR-expressible test network, exported in the default
(portable) profile, run by every peer - snntorch in this environment, norse, sinabs, rockpool and
spyx in the peer environment ``.venv-peers`` (``make peers``; the driver runs there in a
subprocess). Expectations, the peers' own neuron models and their bugs: tests/interop/peer_matrix.py.

A peer that is not installed fails this test (``make test`` makes the peer environment; set
SPIKEDEPLOY_SKIP_PEERS=1 to skip the matrix explicitly)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

nir = pytest.importorskip("nir")

from spikedeploy.exporters import nir as NX
from spikedeploy.exporters import nir_peers as NP

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("peer_matrix", Path(__file__).with_name("peer_matrix.py"))
PM = sys.modules.setdefault("peer_matrix", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(PM)

if os.environ.get("SPIKEDEPLOY_SKIP_PEERS") == "1":
    pytest.skip("SPIKEDEPLOY_SKIP_PEERS=1: the NIR peer matrix is skipped on request", allow_module_level=True)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    d = tmp_path_factory.mktemp("peers")
    results, versions = {}, {}
    for net in PM.NETS:
        g, x, ref = PM.reference(net)
        path = NX.export(g, d / f"{net}.nir", encoding="integer")
        for r in NP.check_peers(path, x.numpy(), ref):
            results[(net, r.peer)] = (r, g, x.numpy(), ref)
            if r.version:
                versions[r.peer] = r.version
    return results, versions


@pytest.mark.parametrize("peer", NP.PEERS)
@pytest.mark.parametrize("net", list(PM.NETS))
def test_peer_runs_network_as_expected(matrix, net, peer):
    results, _ = matrix
    r, g, x, ref = results[(net, peer)]
    assert ref.sum() > 0  # a network that never spikes would prove nothing
    problem = PM.check(net, peer, r, ref, g, x)
    assert problem == "", f"{net} in {peer} {r.version}: {problem}"


def test_readme_interop_table_is_the_generated_one(matrix):
    results, versions = matrix
    table = PM.render({k: v[0] for k, v in results.items()}, versions)
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- nir-interop:start -->\n(.*?)\n<!-- nir-interop:end -->", readme, re.S)
    assert m, "README.md lacks the generated NIR interop table (python scripts/nir_interop_table.py)"
    assert m.group(1).strip() == table.strip(), "README's interop table is stale: python scripts/nir_interop_table.py"
