"""Run a NIR file in other NIR consumers ("peers") and compare their output with spikedeploy's.

Peers: snntorch, norse, sinabs, rockpool (PyTorch) and spyx (JAX). Each driver below reads the file
with ``nir.read`` (NIR's default checks), builds the peer's model with the peer's own NIR importer,
feeds it the input ``x`` ``[T, B, *s]`` one NIR time step (= one IR macro-step, dt = 1e-4 s) at a
time, in the layout the peer documents, and returns its output ``[T, B, *s_out]`` as float64. No
driver fixes a peer's result: a peer that crashes is reported with its exception, a peer that
computes something else is reported with where its output differs.

The peers live in their own environment (``.venv-peers``, made by ``make peers``): run
``python -m spikedeploy.exporters.nir_peers FILE INPUT.npy`` there, or call :func:`check_peers`,
which runs the peers importable here and those of the peer environment (in a subprocess).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

PEERS = ("snntorch", "norse", "sinabs", "rockpool", "spyx")
#: the distribution whose version a result names (the peer's package)
DIST = {"snntorch": "snntorch", "norse": "norse", "sinabs": "sinabs", "rockpool": "rockpool", "spyx": "spyx"}
#: the peer environment made by `make peers`, relative to the repository root
PEER_VENV = ".venv-peers"
DT = 1e-4


@dataclass
class PeerResult:
    peer: str
    version: Optional[str]
    #: "exact" (identical output), "differs" (ran, other output), "fails" (raised), "missing" (not installed)
    status: str
    detail: str = ""
    #: the peer's output [T, B, *s_out] (float64) when it ran
    output: Optional[np.ndarray] = None

    def cell(self) -> str:
        return {"exact": "exact", "differs": "differs", "fails": "fails", "missing": "not installed"}[self.status]


def _version(peer: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST[peer])
    except PackageNotFoundError:
        return None


def _quiet():
    """Peers print progress and warnings on stdout; keep the caller's stdout clean."""
    return contextlib.redirect_stdout(io.StringIO())


# ---------------------------------------------------------------------------------------------
# drivers: (nir graph, x [T, B, *s] float64) -> [T, B, *s_out] float64
# ---------------------------------------------------------------------------------------------


def _torch_steps(net, x, call) -> np.ndarray:
    import torch

    ys, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = call(net, torch.as_tensor(x[t], dtype=torch.float32), state)
            ys.append(y.detach().double().numpy())
    return np.stack(ys)


def run_snntorch(graph, x) -> np.ndarray:
    from snntorch import utils as snn_utils
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    snn_utils.reset(net)
    return _torch_steps(net, x, lambda n, xt, s: n(xt, s))


def run_norse(graph, x) -> np.ndarray:
    import norse.torch as norse_torch

    net = norse_torch.from_nir(graph, dt=DT)
    return _torch_steps(net, x, lambda n, xt, s: n(xt, s))


def run_sinabs(graph, x) -> np.ndarray:
    """sinabs layers take the time steps folded into the batch axis, ``[B*T, ...]`` (batch-major)."""
    import sinabs
    import torch

    T, B = x.shape[:2]
    net = sinabs.from_nir(graph, batch_size=B)
    xb = torch.as_tensor(np.ascontiguousarray(np.swapaxes(x, 0, 1)).reshape((B * T,) + x.shape[2:]),
                         dtype=torch.float32)
    with torch.no_grad():
        y = net(xb)
    if isinstance(y, tuple):
        y = y[0]
    y = y.detach().double().numpy()
    return np.swapaxes(y.reshape((B, T) + y.shape[1:]), 0, 1)


def run_rockpool(graph, x) -> np.ndarray:
    """rockpool modules take ``[B, T, N]``."""
    import torch
    from rockpool.nn.modules.torch.nir import from_nir

    net = from_nir(graph)
    with torch.no_grad():
        y = net(torch.as_tensor(np.swapaxes(x, 0, 1), dtype=torch.float32))
    if isinstance(y, tuple):
        y = y[0]
    return np.swapaxes(y.detach().double().numpy(), 0, 1)


def run_spyx(graph, x) -> np.ndarray:
    """spyx runs channels-last: ``[T, B, C, H, W]`` is fed as ``[T, B, H, W, C]``."""
    import jax.numpy as jnp
    import spyx.nir as spyx_nir

    xs = np.moveaxis(x, 2, -1) if x.ndim == 5 else x
    _, y = spyx_nir.from_nir(graph, jnp.asarray(xs, dtype=jnp.float32), dt=DT)
    y = np.asarray(y, dtype=np.float64)
    return np.moveaxis(y, -1, 2) if y.ndim == 5 else y


DRIVERS: Dict[str, Callable] = {"snntorch": run_snntorch, "norse": run_norse, "sinabs": run_sinabs,
                                "rockpool": run_rockpool, "spyx": run_spyx}


def _importable(peer: str) -> bool:
    mod = {"snntorch": "snntorch.import_nir", "norse": "norse.torch", "sinabs": "sinabs",
           "rockpool": "rockpool.nn.modules.torch.nir", "spyx": "spyx.nir"}[peer]
    try:
        with _quiet():
            importlib.import_module(mod)
    except ImportError:
        return False
    return True


def compare(expected: np.ndarray, got: np.ndarray) -> str:
    """'' if identical, else where the outputs first differ."""
    if got.shape != expected.shape:
        return f"output shape {list(got.shape)}, expected {list(expected.shape)}"
    bad = np.argwhere(got != expected)
    if len(bad) == 0:
        return ""
    t = int(bad[0][0])
    return (f"{len(bad)} of {expected.size} values differ (first at step {t}); "
            f"{int((got != 0).sum())} non-zero values vs {int((expected != 0).sum())} expected")


def run_peer(peer: str, path, x: np.ndarray, expected: Optional[np.ndarray] = None) -> PeerResult:
    """Run ``peer`` on the NIR file ``path``; compare with ``expected`` when given."""
    import nir

    if not _importable(peer):
        return PeerResult(peer, None, "missing", f"{peer} is not importable here")
    version = _version(peer)
    try:
        with _quiet():
            graph = nir.read(str(path))
            got = DRIVERS[peer](graph, np.asarray(x, dtype=np.float64))
    except Exception as e:  # the peer's own failure is the result
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return PeerResult(peer, version, "fails", f"{type(e).__name__}: {msg}"[:300])
    if expected is None:
        return PeerResult(peer, version, "exact", "ran (no reference given)", got)
    diff = compare(np.asarray(expected, dtype=np.float64), got)
    return PeerResult(peer, version, "differs" if diff else "exact", diff, got)


def _peer_python(root: Optional[Path] = None) -> Optional[Path]:
    root = root or Path(__file__).resolve().parents[1]
    env = os.environ.get("SPIKEDEPLOY_PEER_PYTHON")
    if env:
        return Path(env)
    py = root / PEER_VENV / "bin" / "python"
    return py if py.is_file() else None


def run_in_peer_env(path, x: np.ndarray, expected: np.ndarray, peers=PEERS,
                    python: Optional[Path] = None, timeout: float = 600) -> List[PeerResult]:
    """Run ``peers`` on ``path`` with the peer environment's interpreter (a subprocess)."""
    python = python or _peer_python()
    if python is None:
        return [PeerResult(p, None, "missing", f"no peer environment ({PEER_VENV}: make peers)") for p in peers]
    with tempfile.TemporaryDirectory(prefix="spikedeploy-peers-") as d:
        np.save(Path(d) / "x.npy", x)
        np.save(Path(d) / "expected.npy", expected)
        out = Path(d) / "result.json"
        cmd = [str(python), "-m", "spikedeploy.exporters.nir_peers", str(path), str(Path(d) / "x.npy"),
               "--expected", str(Path(d) / "expected.npy"), "--json", str(out), "--peers", ",".join(peers)]
        cmd += ["--outputs", str(Path(d) / "outputs.npz")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [PeerResult(p, None, "fails", f"peer environment failed: {tail[0]}"[:300]) for p in peers]
        results = [PeerResult(**r) for r in json.loads(out.read_text())]
        with np.load(Path(d) / "outputs.npz", allow_pickle=False) as z:
            for r in results:
                r.output = z[r.peer] if r.peer in z.files else None
        return results


def check_peers(path, x: np.ndarray, expected: np.ndarray) -> List[PeerResult]:
    """Every peer on ``path``: in this environment where importable, else in the peer environment."""
    here = {p: run_peer(p, path, x, expected) for p in PEERS}
    missing = [p for p, r in here.items() if r.status == "missing"]
    if missing and _peer_python() is not None:
        for r in run_in_peer_env(path, x, expected, peers=missing):
            here[r.peer] = r
    return [here[p] for p in PEERS]


def table(results: List[PeerResult]) -> str:
    lines = ["| peer | version | result | detail |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.peer} | {r.version or '-'} | {r.cell()} | {r.detail.replace('|', '/')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m spikedeploy.exporters.nir_peers",
                                 description="run NIR peers on a NIR file")
    ap.add_argument("nir_file")
    ap.add_argument("input", help="x [T, B, *s] as .npy")
    ap.add_argument("--expected", help="the expected output [T, B, *s_out] as .npy")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--outputs", help="write the peers' outputs here (.npz, one array per peer that ran)")
    a = ap.parse_args(argv)
    x = np.load(a.input, allow_pickle=False)
    expected = np.load(a.expected, allow_pickle=False) if a.expected else None
    results = [run_peer(p, a.nir_file, x, expected) for p in a.peers.split(",") if p]
    if a.outputs:
        np.savez(a.outputs, **{r.peer: r.output for r in results if r.output is not None})
    if a.json:
        Path(a.json).write_text(json.dumps([{k: v for k, v in asdict(r).items() if k != "output"} for r in results]))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
