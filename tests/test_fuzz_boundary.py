"""Fuzz tests of the artifact loaders and the CLI boundary (hypothesis, derandomized).

Real small artifacts written by ``spikedeploy export`` (the ``sdt-test`` model on 8 x 8 images)
are damaged at random — truncated and bit-flipped bytes of ONNX and NIR files, junk in the NIR
node records, junk, deleted fields and broken arrays in a Lava bundle's description — and fed to
``spikedeploy run`` in-process (and a few times as a real subprocess). Whatever the damage:

* the exit code is 2 (bad input) or, for a damage that leaves a valid artifact (a flipped bit
  in a weight), 0 — never 1 and never a traceback;
* a refusal prints exactly one line ``spikedeploy: error: ...`` and leaves no output file (nor a
  hidden ``.*.tmp`` sibling);
* a damaged Lava bundle is refused by validation, before any Lava process starts (within
  seconds, no child process left).

Positive controls: the undamaged artifacts run. Run inputs are fuzzed too (dtypes, byte orders,
empty axes, NaN).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (make setup installs it)")
pytest.importorskip("onnxruntime", reason="the ONNX target needs onnxruntime (make setup installs it)")
nir = pytest.importorskip("nir", reason="the NIR target needs nir (make setup installs it)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikedeploy.cli import main  # noqa: E402
from spikedeploy.errors import ArtifactError, InputError  # noqa: E402

FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: a damaged Lava bundle must be refused before any Lava process starts, well within this
LAVA_REFUSAL_S = 5.0
MODEL = ["--model-arg", "image_size=8"]
SPIKEDEPLOY = Path(sys.executable).with_name("spikedeploy")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Undamaged artifacts of every target and an input file."""
    d = tmp_path_factory.mktemp("good")
    paths = {}
    for target, name in (("onnx", "m.onnx"), ("nir", "m.nir"), ("lava", "m.lava")):
        paths[target] = d / name
        assert main(["export", "--target", target, *MODEL, "-o", str(paths[target])]) == 0
    np.save(d / "x.npy", np.random.default_rng(1).normal(size=(1, 2, 3, 8, 8)) * 2)
    paths["x"] = d / "x.npy"
    return paths


def cli_run(capsys, target, artifact, inputs, *, allow_success=False):
    """``spikedeploy run`` in-process with ``-o`` into a fresh folder; checks the boundary rules
    and returns (exit code, stderr line, seconds)."""
    out_dir = Path(tempfile.mkdtemp(prefix="fuzz-out-"))
    out = out_dir / "o.npz"
    capsys.readouterr()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:  # a warning would be a second stderr line
            warnings.simplefilter("always")
            rc = main(["run", "--target", target, str(artifact), "--input", str(inputs), "-o", str(out),
                       "--no-progress"])
        seconds = time.perf_counter() - t0
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert rc == 0 or not caught, f"warnings beside the error: {[str(w.message)[:100] for w in caught]}"
        if rc == 0 and allow_success:
            assert out.is_file() and [p.name for p in out_dir.iterdir()] == ["o.npz"]
            return rc, "", seconds
        lines = err.strip().splitlines()
        assert rc == 2, f"exit code {rc}: {err}"
        assert len(lines) == 1 and lines[0].startswith("spikedeploy: error: "), err
        assert list(out_dir.iterdir()) == [], "a refused run left output (or a temporary file) behind"
        return rc, lines[0], seconds
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _children() -> list:
    """PIDs of this process's child processes (a Lava run forks one per Lava process)."""
    me, out = os.getpid(), []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            status = (p / "status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{me}\n" in status:
            out.append(int(p.name))
    return out


# ---------------------------------------------------------------------------------------------
# positive controls
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["onnx", "nir"])
def test_undamaged_artifacts_run(capsys, good, target):
    rc, _, _ = cli_run(capsys, target, good[target], good["x"], allow_success=True)
    assert rc == 0


def test_undamaged_lava_bundle_runs(capsys, good):
    """The Lava bundle the fuzz cases damage runs when undamaged (validation refuses nothing valid)."""
    rc, _, _ = cli_run(capsys, "lava", good["lava"], good["x"], allow_success=True)
    assert rc == 0


# ---------------------------------------------------------------------------------------------
# bytes of ONNX and NIR files
# ---------------------------------------------------------------------------------------------


def _write(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="fuzz-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


@pytest.mark.parametrize("target, suffix", [("onnx", ".onnx"), ("nir", ".nir")])
@FUZZ
@given(cut=st.floats(0.0, 0.999))
def test_truncated_files_exit_2(capsys, good, target, suffix, cut):
    data = good[target].read_bytes()
    path = _write(data[: int(len(data) * cut)], suffix)
    try:
        cli_run(capsys, target, path, good["x"])
    finally:
        path.unlink()


@pytest.mark.parametrize("target, suffix", [("onnx", ".onnx"), ("nir", ".nir")])
@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.0, 0.9999), st.integers(1, 255)), min_size=1, max_size=8))
def test_bit_flipped_files_exit_0_or_2(capsys, good, target, suffix, flips):
    data = bytearray(good[target].read_bytes())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path = _write(bytes(data), suffix)
    try:
        cli_run(capsys, target, path, good["x"], allow_success=True)
    finally:
        path.unlink()


# ---------------------------------------------------------------------------------------------
# NIR node records
# ---------------------------------------------------------------------------------------------

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.sampled_from([10 ** 12, -(10 ** 12), 2 ** 63]),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                 st.lists(st.integers(-2, 3), max_size=4), st.just({}), st.just({"evil": 1}))


@FUZZ
@given(node=st.integers(0, 39), field=st.sampled_from(["op", "inputs", "params", "arrays", "source", "param", "delete"]),
       junk=JUNK, pick=st.integers(0, 10 ** 6))
def test_junk_in_nir_node_records_exit_0_or_2(capsys, good, node, field, junk, pick):
    from spikedeploy.exporters.nir import META

    g = nir.read(good["nir"], type_check=False)
    names = json.loads(g.metadata[META])["nodes"]
    n = g.nodes[names[node % len(names)]]
    rec = json.loads(n.metadata[META])
    if field == "param":
        if not rec["params"]:
            return
        key = sorted(rec["params"])[pick % len(rec["params"])]
        rec["params"][key] = junk
    elif field == "delete":
        del rec[sorted(rec)[pick % len(rec)]]
    else:
        rec[field] = junk
    n.metadata[META] = json.dumps(rec)
    path = Path(tempfile.mkdtemp(prefix="fuzz-")) / "m.nir"
    try:
        nir.write(path, g)
        cli_run(capsys, "nir", path, good["x"], allow_success=True)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Lava bundle descriptions (validation only: nothing may start)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(good):
    desc = json.loads((good["lava"] / "graph.json").read_text())
    with np.load(good["lava"] / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return desc, arrays


def _save_bundle(desc, arrays) -> Path:
    path = Path(tempfile.mkdtemp(prefix="fuzz-")) / "b.lava"
    path.mkdir()
    (path / "graph.json").write_text(json.dumps(desc))
    np.savez(path / "arrays.npz", **arrays)
    return path


def _load_refused(desc, arrays):
    """``load`` refuses the bundle: an ArtifactError of one line, quickly, no child process."""
    from spikedeploy.exporters.lava import load

    path = _save_bundle(desc, arrays)
    try:
        t0 = time.perf_counter()
        with pytest.raises(ArtifactError) as ei:
            load(path)
        assert time.perf_counter() - t0 < LAVA_REFUSAL_S
        msg = str(ei.value)
        assert "\n" not in msg and str(path) in msg and ei.value.exit_code == 2
        return msg
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


#: fields each process type needs (read from runtimes/lava.py and runtimes/lava_procs.py), all
#: integers >= 1 where the runtime divides, loops or builds windows with them
POSITIVE_FIELDS = {
    "neuron": ["size", "window", "in_start", "in_len", "out_start"],
    "sparse": [],
    "source": ["size", "start"],
    "readout": ["size", "start", "length"],
    "delay": ["size", "delay"],
    "junction": ["size", "in_start", "in_len"],
    "attention": ["channels", "v_channels", "tokens", "heads", "kv_start", "kv_len", "q_start", "q_len"],
}
REQUIRED_FIELDS = {
    "neuron": ["size", "shape", "neuron", "encoding", "window", "bias", "in_start", "in_len", "out_start"],
    "sparse": ["shape", "num_message_bits", "data", "indices", "indptr"],
    "source": ["size", "start", "value"],
    "readout": ["size", "offset", "start", "length"],
    "delay": ["size", "delay"],
    "junction": ["size", "in_start", "in_len"],
    "attention": ["channels", "v_channels", "tokens", "heads", "scale", "kv_start", "kv_len", "q_start", "q_len"],
}
NOT_A_POSITIVE_INT = st.sampled_from([-1, 0, "4", 1.5, None, True, 10 ** 15, [], {}, float("nan")])


@FUZZ
@given(index=st.integers(0, 10 ** 6), pick=st.integers(0, 10 ** 6), junk=NOT_A_POSITIVE_INT)
def test_bundle_fields_that_are_not_positive_integers(bundle, index, pick, junk):
    desc, arrays = copy.deepcopy(bundle[0]), bundle[1]
    procs = [p for p in desc["processes"] if POSITIVE_FIELDS.get(p["type"])]
    p = procs[index % len(procs)]
    fields = POSITIVE_FIELDS[p["type"]]
    p[fields[pick % len(fields)]] = junk
    _load_refused(desc, arrays)


@FUZZ
@given(index=st.integers(0, 10 ** 6), pick=st.integers(0, 10 ** 6))
def test_bundle_processes_missing_a_field(bundle, index, pick):
    desc, arrays = copy.deepcopy(bundle[0]), bundle[1]
    procs = [p for p in desc["processes"] if p["type"] in REQUIRED_FIELDS]
    p = procs[index % len(procs)]
    fields = REQUIRED_FIELDS[p["type"]]
    del p[fields[pick % len(fields)]]
    _load_refused(desc, arrays)


@FUZZ
@given(index=st.integers(0, 10 ** 6),
       field=st.sampled_from(["type", "encoding", "neuron.kind", "neuron.rounding", "neuron.d", "neuron.reset_norm",
                              "neuron.leak", "bias", "delete.rounding", "delete.kind"]),
       junk=st.sampled_from(["evil", "", None, -3, [1, 2], {"a": 1}, float("inf"), True]))
def test_bundle_neurons_with_bad_kinds_and_parameters(bundle, index, field, junk):
    desc, arrays = copy.deepcopy(bundle[0]), bundle[1]
    neurons = [p for p in desc["processes"] if p["type"] == "neuron"]
    p = neurons[index % len(neurons)]
    if field.startswith("delete."):
        del p["neuron"][field.split(".")[1]]
    elif field.startswith("neuron."):
        if field == "neuron.leak" and (junk is None or junk == -3 or isinstance(junk, list)):
            junk = "evil"  # no leak (None), any finite leak and one per step are valid
        p["neuron"][field.split(".")[1]] = junk
    else:
        p[field] = junk
    _load_refused(desc, arrays)


@FUZZ
@given(which=st.sampled_from(["nan", "inf", "complex", "bool", "text", "short", "2d", "empty"]),
       index=st.integers(0, 10 ** 6), field=st.sampled_from(["bias", "data", "indices", "indptr", "offset"]))
def test_bundle_arrays_broken(bundle, which, index, field):
    desc, arrays = bundle[0], dict(bundle[1])
    procs = [p for p in desc["processes"] if field in p]
    key = procs[index % len(procs)][field]
    a = arrays[key]
    if which in ("nan", "inf"):
        if a.dtype.kind != "f":
            return
        a = a.copy()
        a.flat[index % a.size] = np.nan if which == "nan" else -np.inf
    elif which == "complex":
        a = a.astype(np.complex128)
    elif which == "bool":
        a = a != 0
    elif which == "text":
        a = np.array(["evil"] * 3)
    elif which == "short":
        a = a.reshape(-1)[:-1]
    elif which == "2d":
        a = np.stack([a.reshape(-1)] * 2) if field != "bias" and field != "offset" else a.reshape(-1)[:-1]
    else:
        a = a.reshape(-1)[:0]
    arrays[key] = a
    _load_refused(desc, arrays)


def _paths(obj, prefix=()):
    """Every path to a leaf or container in a JSON value."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(pick=st.integers(0, 10 ** 9), junk=JUNK, delete=st.booleans())
def test_any_junk_anywhere_in_a_bundle_never_crashes_the_loader(bundle, pick, junk, delete):
    """Junk at any place of the description: ``load`` refuses it with an ArtifactError or (where
    the junk happens to be valid, e.g. in a label) accepts it; it never fails otherwise."""
    from spikedeploy.exporters.lava import load

    desc, arrays = copy.deepcopy(bundle[0]), bundle[1]
    paths = [p for p in _paths(desc) if p and p[0] not in ("timing", "fusion", "process_counts", "graph_meta")]
    path = paths[pick % len(paths)]
    parent = desc
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    folder = _save_bundle(desc, arrays)
    try:
        t0 = time.perf_counter()
        try:
            load(folder)
        except ArtifactError as e:
            assert "\n" not in str(e) and e.exit_code == 2
        assert time.perf_counter() - t0 < LAVA_REFUSAL_S
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


@pytest.mark.parametrize("case", ["no-rounding", "negative-end-step", "huge-end-step", "evil-kind", "nan-bias",
                                  "bad-port"])
def test_damaged_bundles_through_the_cli_refuse_before_lava_starts(capsys, good, bundle, case):
    desc, arrays = copy.deepcopy(bundle[0]), dict(bundle[1])
    neuron = next(p for p in desc["processes"] if p["type"] == "neuron")
    if case == "no-rounding":
        del neuron["neuron"]["rounding"]
    elif case == "negative-end-step":
        desc["end_step"] = -1
    elif case == "huge-end-step":
        desc["end_step"] = 10 ** 9
    elif case == "evil-kind":
        neuron["neuron"]["kind"] = "evil"
    elif case == "nan-bias":
        arrays[neuron["bias"]] = np.full_like(arrays[neuron["bias"]], np.nan)
    else:
        desc["connections"][-1]["dst_port"] = "s_in; rm -rf"
    path = _save_bundle(desc, arrays)
    before = set(_children())  # e.g. multiprocessing's resource tracker after an earlier Lava run
    try:
        _, line, seconds = cli_run(capsys, "lava", path, good["x"])
        assert seconds < LAVA_REFUSAL_S and str(path) in line
        assert set(_children()) - before == set(), "the refused run started a process"
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# run inputs
# ---------------------------------------------------------------------------------------------

ALLOWED = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float16", "float32", "float64")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(dtype=st.sampled_from(list(ALLOWED) + ["uint64", "bool", "complex64", "complex128", "longdouble"]),
       order=st.sampled_from(["<", ">", "="]),
       shape=st.lists(st.integers(0, 3), min_size=1, max_size=5), nan=st.booleans())
def test_input_files(dtype, order, shape, nan):
    from spikedeploy.api import load_input_file

    dt = np.dtype(dtype)
    if dt.itemsize > 1 and dt.kind != "b":
        dt = dt.newbyteorder(order)
    arr = np.ones(shape, dtype=dt)
    if nan and dt.kind in "fc" and arr.size:
        arr.flat[0] = np.nan
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / "x.npy"
    try:
        np.save(path, arr)
        ok = dt.name in ALLOWED and len(shape) >= 3 and arr.size > 0 and not (nan and dt.kind == "f")
        if ok:
            x = load_input_file(path)
            assert tuple(x.shape) == tuple(shape) and float(x.double().sum()) == arr.size
        else:
            with pytest.raises(InputError) as ei:
                load_input_file(path)
            assert "x.npy" in str(ei.value) and "\n" not in str(ei.value)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# real subprocesses: the installed command prints one line and no traceback
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SPIKEDEPLOY.is_file(), reason="the spikedeploy console script is not installed next to "
                                                      "this Python")
def test_subprocess_runs_print_one_line_and_no_traceback(good, bundle, tmp_path):
    onnx_cut = tmp_path / "cut.onnx"
    onnx_cut.write_bytes(good["onnx"].read_bytes()[:1000])
    nir_cut = tmp_path / "cut.nir"
    nir_cut.write_bytes(good["nir"].read_bytes()[:5000])
    desc, arrays = copy.deepcopy(bundle[0]), bundle[1]
    del next(p for p in desc["processes"] if p["type"] == "neuron")["neuron"]["rounding"]  # hung before
    lava_bad = tmp_path / "bad.lava"
    lava_bad.mkdir()
    (lava_bad / "graph.json").write_text(json.dumps(desc))
    np.savez(lava_bad / "arrays.npz", **arrays)
    x_complex = tmp_path / "xc.npy"
    np.save(x_complex, np.load(good["x"]).astype(np.complex64))
    env = dict(os.environ)
    env.pop("SPIKEDEPLOY_DEBUG", None)
    for target, art, x in (("onnx", onnx_cut, good["x"]), ("nir", nir_cut, good["x"]), ("lava", lava_bad, good["x"]),
                           ("onnx", good["onnx"], x_complex)):
        out = tmp_path / f"out-{target}.npz"
        r = subprocess.run([str(SPIKEDEPLOY), "run", "--target", target, str(art), "--input", str(x), "-o", str(out),
                            "--no-progress"], capture_output=True, text=True, timeout=180, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, r.stderr
        assert len(lines) == 1 and lines[0].startswith("spikedeploy: error: ") and "Traceback" not in r.stderr
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.lava", "cut.nir", "cut.onnx", "xc.npy"]
