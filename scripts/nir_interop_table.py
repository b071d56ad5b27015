"""Write the README's NIR interop table from the peer matrix's results.

Runs the same matrix as tests/interop/test_nir_peers.py (networks and expectations from
tests/interop/peer_matrix.py; norse, sinabs, rockpool and spyx in .venv-peers, made by
`make peers`) and replaces the README section between the nir-interop markers. The test fails
while the README's table differs from the one this script writes.

    .venv/bin/python scripts/nir_interop_table.py
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from spikedeploy.exporters import nir as NX
    from spikedeploy.exporters import nir_peers as NP

    spec = importlib.util.spec_from_file_location("peer_matrix", ROOT / "tests" / "interop" / "peer_matrix.py")
    pm = sys.modules.setdefault("peer_matrix", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(pm)
    results, versions, problems = {}, {}, []
    with tempfile.TemporaryDirectory() as d:
        for net in pm.NETS:
            g, x, ref = pm.reference(net)
            path = NX.export(g, Path(d) / f"{net}.nir", encoding="integer")
            for r in NP.check_peers(path, x.numpy(), ref):
                results[(net, r.peer)] = r
                versions[r.peer] = r.version or versions.get(r.peer, "?")
                p = pm.check(net, r.peer, r, ref, g, x.numpy())
                if p:
                    problems.append(f"{net} / {r.peer}: {p}")
    if problems:  # the table states the expectations: only write it when the results bear them out
        print("the peer results disagree with tests/interop/peer_matrix.py:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    table = pm.render(results, versions)
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"<!-- nir-interop:start -->\n{table}\n<!-- nir-interop:end -->"
    pat = re.compile(r"<!-- nir-interop:start -->\n.*?<!-- nir-interop:end -->", re.S)
    if not pat.search(text):
        print("README.md has no nir-interop markers", file=sys.stderr)
        return 1
    readme.write_text(pat.sub(lambda _: block, text))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
