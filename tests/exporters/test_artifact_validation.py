"""Every malformed artifact (ONNX model, NIR file, Lava bundle) and run input is refused at the
boundary: ``spikedeploy run`` exits 2 with one line naming the file and the field, no traceback,
no output written, and (Lava) before any Lava process starts. Positive controls: the untouched
artifacts still load and run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.cli import main
from spikedeploy.errors import ArtifactError, InputError

nir = pytest.importorskip("nir", reason="the NIR target needs nir (make setup installs it)")
onnx = pytest.importorskip("onnx", reason="the ONNX target needs onnx (make setup installs it)")
pytest.importorskip("onnxruntime", reason="the ONNX target needs onnxruntime (make setup installs it)")

#: a small sdt-test model (8 x 8 images) exports in about a second per target
MODEL = ["--model-arg", "image_size=8"]
#: a Lava bundle must be refused before any process starts: well under this many seconds
LAVA_REFUSAL_S = 10.0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("artifacts")
    paths = {}
    for target, name in (("onnx", "m.onnx"), ("nir", "m.nir"), ("lava", "m.lava")):
        paths[target] = d / name
        assert main(["export", "--target", target, *MODEL, "-o", str(paths[target])]) == 0
    x = d / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(1, 2, 3, 8, 8)))
    paths["x"] = x
    return paths


def run_refused(capsys, tmp_path, target, artifact, inputs, *, contains=()):
    """``spikedeploy run`` on a bad artifact/input: exit 2, one line, nothing written."""
    out = tmp_path / "out" / "o.npz"
    out.parent.mkdir(exist_ok=True)
    capsys.readouterr()
    t0 = time.perf_counter()
    rc = main(["run", "--target", target, str(artifact), "--input", str(inputs), "-o", str(out), "--no-progress"])
    seconds = time.perf_counter() - t0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("spikedeploy: error: "), captured.err
    assert "Traceback" not in captured.err
    assert list(out.parent.iterdir()) == [], "a refused run wrote something"
    for c in contains:
        assert c in lines[0], lines[0]
    return lines[0], seconds


def write_copy(tmp_path, src: Path, name: str) -> Path:
    dst = tmp_path / name
    dst.write_bytes(src.read_bytes())
    return dst


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------


def test_good_onnx_model_runs(capsys, tmp_path, artifacts):
    out = tmp_path / "o.npz"
    assert main(["run", "--target", "onnx", str(artifacts["onnx"]), "--input", str(artifacts["x"]),
                 "-o", str(out), "--no-progress"]) == 0
    assert np.load(out)["output/head"].shape == (1, 2, 10)


@pytest.mark.parametrize("case", ["truncated", "empty", "text", "foreign-onnx", "no-metadata-inputs",
                                  "shape-mismatch", "string-timesteps", "unknown-output"])
def test_bad_onnx_models_exit_2(capsys, tmp_path, artifacts, case):
    data = artifacts["onnx"].read_bytes()
    path = tmp_path / "bad.onnx"
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_bytes(b"hello, I am not an ONNX model\n" * 20)
    else:
        model = onnx.load_model_from_string(data)
        if case == "foreign-onnx":
            del model.metadata_props[:]
        else:
            meta = {p.key: p for p in model.metadata_props}
            if case == "no-metadata-inputs":
                meta["spikedeploy.inputs"].value = "[]"
            elif case == "shape-mismatch":
                spec = json.loads(meta["spikedeploy.inputs"].value)
                spec[0]["shape"] = [3, 9, 9]
                meta["spikedeploy.inputs"].value = json.dumps(spec)
            elif case == "string-timesteps":
                meta["spikedeploy.timesteps"].value = '"1"'
            elif case == "unknown-output":
                outs = json.loads(meta["spikedeploy.outputs"].value)
                meta["spikedeploy.outputs"].value = json.dumps({k: "nope" for k in outs})
        path.write_bytes(model.SerializeToString())
    line, _ = run_refused(capsys, tmp_path, "onnx", path, artifacts["x"], contains=(str(path),))
    assert "export it again" in line or "not one written by spikedeploy" in line


def test_onnx_load_raises_artifact_error(tmp_path):
    from spikedeploy.exporters.onnx import load

    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match="e.onnx is empty") as ei:
        load(tmp_path / "e.onnx")
    assert ei.value.exit_code == 2


# ---------------------------------------------------------------------------------------------
# NIR
# ---------------------------------------------------------------------------------------------


def _rewrite_nir(src: Path, dst: Path, edit) -> Path:
    """Read ``src``, let ``edit(graph_record, node_records, nir_graph)`` change the spikedeploy
    records (dicts) or the NIR graph, and write the result to ``dst``."""
    from spikedeploy.exporters.nir import META

    g = nir.read(src, type_check=False)
    grec = json.loads(g.metadata[META])
    recs = {k: json.loads(n.metadata[META]) for k, n in g.nodes.items()
            if isinstance(getattr(n, "metadata", None), dict) and META in n.metadata}
    edit(grec, recs, g)
    g.metadata[META] = json.dumps(grec)
    for k, r in recs.items():
        g.nodes[k].metadata[META] = json.dumps(r)
    nir.write(dst, g)
    return dst


def _nir_edit(case):
    def edit(grec, recs, g):
        names = grec["nodes"]
        first, second, last = names[0], names[1], names[-1]
        if case == "cycle":  # the first neuron reads a node that comes after it
            recs[second]["inputs"] = [names[5]]
        elif case == "edge-cycle":  # records intact, a NIR edge back from the last node
            g.edges.append((last, first))
        elif case == "self-loop":
            recs[second]["inputs"] = [second]
        elif case == "missing-node":
            grec["nodes"] = names + ["ghost"]
        elif case == "missing-input":
            recs[second]["inputs"] = ["ghost"]
        elif case == "wrong-weight-shape":
            g.nodes[first].weight = np.ones((8, 2, 3, 3))
        elif case == "huge-input-shape":
            grec["inputs"][0][1] = [3, 100_000, 100_000]
        elif case == "stride-0":
            recs[first]["params"]["stride"] = [0, 0]
        elif case == "string-stride":
            recs[first]["params"]["stride"] = ["1", "1"]
        elif case == "unknown-op":
            recs[second]["op"] = "Evil"
        elif case == "nan-weight":
            w = np.array(g.nodes[first].weight, dtype=np.float64)
            w.flat[0] = np.nan
            g.nodes[first].weight = w
        elif case == "complex-weight":
            g.nodes[first].weight = np.array(g.nodes[first].weight) * (1 + 1j)
        elif case == "bad-encoding":
            grec["encoding"] = "evil"
        elif case == "no-outputs":
            grec["outputs"] = []
        else:  # pragma: no cover
            raise AssertionError(case)
    return edit


NIR_CASES = ["cycle", "edge-cycle", "self-loop", "missing-node", "missing-input", "wrong-weight-shape",
             "huge-input-shape", "stride-0", "string-stride", "unknown-op", "nan-weight", "complex-weight",
             "bad-encoding", "no-outputs"]


def test_good_nir_file_runs(capsys, tmp_path, artifacts):
    out = tmp_path / "o.npz"
    assert main(["run", "--target", "nir", str(artifacts["nir"]), "--input", str(artifacts["x"]),
                 "-o", str(out), "--no-progress"]) == 0
    assert np.load(out)["output/head"].shape == (1, 2, 10)
    # a file rewritten without any change is still good (the rewrite itself is not what is refused)
    same = _rewrite_nir(artifacts["nir"], tmp_path / "same.nir", lambda *a: None)
    assert main(["run", "--target", "nir", str(same), "--input", str(artifacts["x"]), "--no-progress"]) == 0


@pytest.mark.parametrize("case", NIR_CASES)
def test_malformed_nir_files_exit_2(capsys, tmp_path, artifacts, case):
    path = _rewrite_nir(artifacts["nir"], tmp_path / f"{case}.nir", _nir_edit(case))
    run_refused(capsys, tmp_path, "nir", path, artifacts["x"], contains=(path.name,))


@pytest.mark.parametrize("case", ["truncated", "empty", "text"])
def test_damaged_nir_files_exit_2(capsys, tmp_path, artifacts, case):
    data = artifacts["nir"].read_bytes()
    path = tmp_path / "bad.nir"
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"not hdf5 " * 50}[case])
    run_refused(capsys, tmp_path, "nir", path, artifacts["x"], contains=("bad.nir",))


def test_nir_messages_name_the_node_and_field(tmp_path, artifacts):
    from spikedeploy.exporters.nir import load

    path = _rewrite_nir(artifacts["nir"], tmp_path / "s.nir", _nir_edit("stride-0"))
    with pytest.raises(ArtifactError, match=r"s\.nir.*'stem_conv'.*stride\[0\].*>= 1.*export it again"):
        load(path)
    path = _rewrite_nir(artifacts["nir"], tmp_path / "c.nir", _nir_edit("cycle"))
    with pytest.raises(ArtifactError, match=r"c\.nir.*'down_spike'.*not a graph input or an earlier node"):
        load(path)
    path = _rewrite_nir(artifacts["nir"], tmp_path / "h.nir", _nir_edit("huge-input-shape"))
    with pytest.raises(ArtifactError, match=r"h\.nir.*more than the limit"):
        load(path)


def test_nir_runtime_refuses_empty_and_bad_inputs(artifacts):
    from spikedeploy.exporters.nir import load
    from spikedeploy.runtimes.nir import run

    art = load(artifacts["nir"])
    for x, match in ((np.zeros((1, 0, 3, 8, 8)), "batch axis B"), (np.zeros((0, 2, 3, 8, 8)), "time axis T"),
                     (np.zeros((1, 2, 3, 8, 8), dtype=np.complex128), "complex"),
                     (np.zeros((1, 2, 3, 8, 8), dtype=bool), "bool"),
                     (np.full((1, 2, 3, 8, 8), np.nan), "NaN"), (np.zeros((1, 2, 3, 9, 9)), r"shape \[T, B, 3, 8, 8\]")):
        with pytest.raises(InputError, match=match):
            run(art, x)
    assert run(art, np.zeros((1, 2, 3, 8, 8), dtype=np.int16)).outputs["head"].shape == (1, 2, 10)


# ---------------------------------------------------------------------------------------------
# Lava bundles (validated in exporters/lava.py's load, before any Lava process starts)
# ---------------------------------------------------------------------------------------------


def _bundle_parts(path: Path):
    desc = json.loads((path / "graph.json").read_text())
    with np.load(path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return desc, arrays


def write_bundle(path: Path, desc, arrays) -> Path:
    path.mkdir()
    (path / "graph.json").write_text(json.dumps(desc))
    np.savez(path / "arrays.npz", **arrays)
    return path


def _first(desc, kind):
    return next(p for p in desc["processes"] if p["type"] == kind)


def _first_tap_port(desc):
    for p in desc["processes"]:
        for taps in (p.get("inputs") or {}).values():
            for t in taps:
                return t["sources"][0]
    raise AssertionError("no fused input in the bundle")


def _lava_edit(case):
    """(description, arrays) -> the damage of ``case``, in place."""
    def edit(d, a):
        neuron = _first(d, "neuron")
        sparse = _first(d, "sparse")
        if case == "string-size":
            neuron["size"] = str(neuron["size"])
        elif case == "negative-size":
            neuron["size"] = -neuron["size"]
        elif case == "bool-size":
            neuron["size"] = True
        elif case == "bad-connection-port":
            d["connections"][0]["dst_port"] = "nope"
        elif case == "bad-tap-port":
            _first_tap_port(d)["port"] = "__class__"
        elif case == "unknown-source":
            d["connections"][0]["src"] = "neuron:ghost"
        elif case == "wrong-bias-shape":
            a[neuron["bias"]] = np.zeros(7)
        elif case == "csr-indptr-decreasing":
            a[sparse["indptr"]] = a[sparse["indptr"]][::-1].copy()
        elif case == "csr-index-out-of-range":
            ind = a[sparse["indices"]].copy()
            ind[0] = sparse["shape"][1] + 5
            a[sparse["indices"]] = ind
        elif case == "csr-lengths":
            a[sparse["indices"]] = a[sparse["indices"]][:-1].copy()
        elif case == "negative-end-step":
            d["end_step"] = -5
        elif case == "huge-end-step":
            d["end_step"] = 10 ** 12
        elif case == "inconsistent-end-step":
            d["end_step"] = d["end_step"] + 1000
        elif case == "neuron-without-rounding":
            del neuron["neuron"]["rounding"]
        elif case == "unknown-neuron-kind":
            neuron["neuron"]["kind"] = "evil"
        elif case == "unknown-rounding":
            neuron["neuron"]["rounding"] = "up"
        elif case == "nan-bias":
            b = a[neuron["bias"]].copy()
            b.flat[0] = np.nan
            a[neuron["bias"]] = b
        elif case == "nan-weights":
            w = a[sparse["data"]].copy()
            w.flat[-1] = np.inf
            a[sparse["data"]] = w
        elif case == "complex-bias":
            a[neuron["bias"]] = a[neuron["bias"]].astype(np.complex128)
        elif case == "unknown-process-type":
            neuron["type"] = "evil"
        elif case == "missing-field":
            del neuron["in_len"]
        elif case == "window-beyond-period":
            neuron["window"] = d["period"] + 1
        elif case == "string-period":
            d["period"] = "4"
        elif case == "bad-encoding":
            d["encoding"] = "evil"
        elif case == "too-many-processes":
            d["processes"] = d["processes"] * 1000
        elif case == "neuron-table":
            next(iter(d["neurons"].values()))["proc"] = "neuron:ghost"
        elif case == "host-op":
            d["host"]["nodes"][0]["op"]["fields"]["stride"] = {"tuple": [0, 0]}
        elif case == "zero-input-steps":
            d["inputs"][0]["steps"] = 0
        else:  # pragma: no cover
            raise AssertionError(case)
    return edit


LAVA_CASES = ["string-size", "negative-size", "bool-size", "bad-connection-port", "bad-tap-port", "unknown-source",
              "wrong-bias-shape", "csr-indptr-decreasing", "csr-index-out-of-range", "csr-lengths",
              "negative-end-step", "huge-end-step", "inconsistent-end-step", "neuron-without-rounding",
              "unknown-neuron-kind", "unknown-rounding", "nan-bias", "nan-weights", "complex-bias",
              "unknown-process-type", "missing-field", "window-beyond-period", "string-period", "bad-encoding",
              "too-many-processes", "neuron-table", "host-op", "zero-input-steps"]


@pytest.mark.parametrize("case", LAVA_CASES)
def test_malformed_lava_bundles_exit_2_before_lava_starts(capsys, tmp_path, artifacts, case):
    desc, arrays = _bundle_parts(artifacts["lava"])
    _lava_edit(case)(desc, arrays)
    path = write_bundle(tmp_path / f"{case}.lava", desc, arrays)
    before = _children()  # e.g. multiprocessing's resource tracker after an earlier Lava run
    line, seconds = run_refused(capsys, tmp_path, "lava", path, artifacts["x"], contains=(path.name,))
    assert seconds < LAVA_REFUSAL_S, f"refused after {seconds:.1f} s: did a Lava process start?"
    assert _children() - before == set(), "the refused run started a process"


def _children() -> set:
    return {p.name for p in Path("/proc").glob("[0-9]*") if _ppid(p) == os.getpid()}


def _ppid(proc: Path) -> int:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def test_lava_arrays_announcing_a_huge_array_are_refused_unread(capsys, tmp_path, artifacts):
    """A compressed arrays.npz member whose header announces 10^12 values (a few bytes on disk)."""
    import io
    import zipfile

    desc, arrays = _bundle_parts(artifacts["lava"])
    path = write_bundle(tmp_path / "bomb.lava", desc, arrays)
    with zipfile.ZipFile(path / "arrays.npz", "a", compression=zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)})
        z.writestr("bomb.npy", buf.getvalue() + b"\0" * 4096)
    line, seconds = run_refused(capsys, tmp_path, "lava", path, artifacts["x"], contains=("'bomb.npy'", "limit"))
    assert seconds < LAVA_REFUSAL_S


def test_lava_messages_name_the_process_and_field(tmp_path, artifacts):
    from spikedeploy.exporters.lava import load

    for case, match in (("unknown-neuron-kind", r"'neuron:down_spike'.*neuron\.kind.*'evil'.*integer_lif"),
                        ("neuron-without-rounding", r"'neuron:down_spike'.*neuron\.rounding: missing"),
                        ("huge-end-step", r"end_step: must be <= 1000000"),
                        ("string-size", r"'neuron:down_spike'.*size: expected an integer, got '512'"),
                        ("csr-indptr-decreasing", r"'sparse:down_conv'.*indptr.*broken CSR"),
                        ("nan-bias", r"bias \(array 'a0'\): has 1 NaN/Inf"),
                        ("bad-connection-port", r"connections\[0\]\.dst_port: unknown value 'nope'")):
        desc, arrays = _bundle_parts(artifacts["lava"])
        _lava_edit(case)(desc, arrays)
        with pytest.raises(ArtifactError, match=match) as ei:
            load(write_bundle(tmp_path / f"{case}.lava", desc, arrays))
        assert "export the bundle again" in str(ei.value) and "\n" not in str(ei.value)


def test_the_validator_accepts_every_compiled_bundle():
    """Positive control: bundles the compiler writes pass (every neuron kind, both encodings,
    fused and unfused, convolutions kept as kernels, the time axis)."""
    from spikedeploy import api
    from spikedeploy.exporters import lava as L
    from spikedeploy.exporters.lava_validate import validate_bundle

    n = 0
    for kind, T in (("ilif", 1), ("nilif", 3), ("dilif", 2), ("binary_lif", 2), ("leaky_ilif", 3)):
        g = api.prepare_graph(api.build_model("sdt-test", neuron=kind, timesteps=T,
                                              model_kwargs={"image_size": 8}), timesteps=T)
        for enc in ("binary", "graded"):
            for fuse, unroll in ((True, None), (False, None), (True, 0)):
                desc, arrays = L.compile_graph(g, enc, fuse=fuse, unroll_limit=unroll)
                before = json.dumps(desc, sort_keys=True)
                validate_bundle(desc, arrays, f"{kind} {enc}")
                assert json.dumps(desc, sort_keys=True) == before  # validation changes nothing
                n += 1
    assert n == 30
    # fixed-point bundles (issue 14): every fixed neuron kind, both encodings, kernels in integers
    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.passes.quantize import quantize_graph

    for kind in ("nilif", "binary_lif"):
        g = api.prepare_graph(api.build_model("sdt-test", neuron=kind, timesteps=2, model_kwargs={"image_size": 8}),
                              timesteps=2)
        x = torch.randn((2, 2) + tuple(g.inputs[0].shape), generator=torch.Generator().manual_seed(0))
        for enc in ("binary", "graded"):
            desc, arrays = L.compile_graph(quantize_graph(ExpandSpikes(enc).apply(g), x), enc, unroll_limit=0)
            assert desc["precision"] == "fixed" and desc["process_counts"].get("conv", 0) > 0
            validate_bundle(desc, arrays, f"fixed {kind} {enc}")


def _memory_read_graph(t_mem: int):
    """x -> neuron -> (T_mem = 3: repeated over 3 macro-steps -> neuron) -> MemoryRead -> neuron."""
    from spikedeploy.ir import Graph, Node, TensorSpec, ops as O

    rng = np.random.default_rng(3)
    mem = O.as_param(rng.normal(size=(t_mem, 2, 2, 3)) * 4)
    nodes = [Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",))]
    if t_mem > 1:
        nodes += [Node("rep", O.RepeatTime(t_mem), ("n0",)),
                  Node("nr", O.IntegerLIF(d=4, norm=4.0, leak=(0.5,) * (t_mem - 1), reset_norm=4.0), ("rep",))]
    nodes += [Node("read", O.MemoryRead(memory=mem, num_heads=2, scale=0.3), (nodes[-1].name,)),
              Node("n1", O.IntegerLIF(d=4, norm=4.0), ("read",))]
    return Graph(inputs=(TensorSpec("x", (4, 5), 1 if t_mem > 1 else None),), nodes=tuple(nodes), outputs=("n1",))


def test_the_validator_accepts_compiled_memory_reads():
    """Positive control for the ``memory_read`` kernel process: T_mem = 1 and 3, both encodings,
    fused and unfused."""
    from spikedeploy.exporters import lava as L
    from spikedeploy.exporters.lava_validate import validate_bundle

    for t_mem in (1, 3):
        for enc in ("binary", "graded"):
            for fuse in (True, False):
                desc, arrays = L.compile_graph(_memory_read_graph(t_mem), enc, fuse=fuse)
                assert desc["process_counts"]["memory_read"] == 1
                validate_bundle(desc, arrays, f"T_mem={t_mem} {enc} fuse={fuse}")


def _memory_read_edit(case):
    def edit(d, a):
        read = _first(d, "memory_read")
        if case == "memory-shape":
            a[read["memory"]] = a[read["memory"]][:, :, :1].copy()
        elif case == "memory-nan":
            m = a[read["memory"]].copy()
            m.flat[2] = np.nan
            a[read["memory"]] = m
        elif case == "memory-steps-without-slots":
            read["mem_steps"] = 3
            a[read["memory"]] = np.repeat(a[read["memory"]], 3, axis=0)
        elif case == "memory-read-fire":
            read["fire"] = read["q_start"]
        elif case == "memory-heads":
            read["heads"] = 3
        else:  # pragma: no cover
            raise AssertionError(case)
    return edit


@pytest.mark.parametrize("case, match", [
    ("memory-shape", r"'memory_read:read'.*memory \(array 'a\d+'\): expected shape \[1, 2, 2, 3\], got \[1, 2, 1, 3\]"),
    ("memory-nan", r"'memory_read:read'.*memory \(array 'a\d+'\): has 1 NaN/Inf"),
    ("memory-steps-without-slots", r"'memory_read:read'.*mem_steps: a memory of 3 steps needs a process of as many"),
    ("memory-read-fire", r"'memory_read:read'.*fire: is \d+, but a memory read sends one step after its q window"),
    ("memory-heads", r"'memory_read:read'.*heads: 3 heads do not divide channels 4"),
])
def test_malformed_memory_reads_are_refused_before_lava_starts(capsys, tmp_path, case, match):
    from spikedeploy.exporters import lava as L

    good = L.export(_memory_read_graph(1), tmp_path / "good.lava", encoding="graded")
    desc, arrays = _bundle_parts(good)
    _memory_read_edit(case)(desc, arrays)
    path = write_bundle(tmp_path / f"{case}.lava", desc, arrays)
    with pytest.raises(ArtifactError, match=match) as ei:
        L.load(path)
    assert "export the bundle again" in str(ei.value) and "\n" not in str(ei.value)
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 1, 4, 5)))
    before = _children()
    _, seconds = run_refused(capsys, tmp_path, "lava", path, x, contains=(path.name, "memory_read:read"))
    assert seconds < LAVA_REFUSAL_S and _children() - before == set()


def test_lava_runtime_refuses_bad_inputs_before_lava_starts(artifacts):
    from spikedeploy.exporters.lava import load
    from spikedeploy.runtimes.lava import run

    bundle = load(artifacts["lava"])
    for x, match in ((np.zeros((1, 0, 3, 8, 8)), "batch axis B"), (np.zeros((0, 2, 3, 8, 8)), "time axis T"),
                     (np.zeros((1, 2, 3, 8, 8), dtype=np.complex64), "complex"),
                     (np.full((1, 2, 3, 8, 8), np.inf), "NaN or Inf"), (np.zeros((1, 2, 3, 9, 9)), "must have shape")):
        before = _children()
        t0 = time.perf_counter()
        with pytest.raises(InputError, match=match):
            run(bundle, x)
        assert time.perf_counter() - t0 < LAVA_REFUSAL_S and _children() - before == set()


# ---------------------------------------------------------------------------------------------
# run inputs
# ---------------------------------------------------------------------------------------------


def test_big_endian_and_integer_inputs_run(capsys, tmp_path, artifacts):
    x = np.load(artifacts["x"])
    for name, arr in (("be.npy", x.astype(">f8")), ("int.npy", (x * 4).astype(np.int32)),
                      ("f16.npy", x.astype(np.float16))):
        np.save(tmp_path / name, arr)
        out = tmp_path / f"{name}.npz"
        assert main(["run", "--target", "onnx", str(artifacts["onnx"]), "--input", str(tmp_path / name),
                     "-o", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    a, b = np.load(tmp_path / "be.npy.npz"), np.load(tmp_path / "int.npy.npz")
    ref = tmp_path / "ref.npz"
    assert main(["run", "--target", "onnx", str(artifacts["onnx"]), "--input", str(artifacts["x"]), "-o", str(ref),
                 "--no-progress"]) == 0
    assert np.array_equal(np.load(ref)["output/head"], a["output/head"])  # big-endian read as the same numbers
    assert b["output/head"].shape == (1, 2, 10)


@pytest.mark.parametrize("case", ["complex", "uint64", "bool", "empty-batch", "empty-time", "nan", "zero-bytes",
                                  "npz", "object", "two-axes", "truncated", "huge-header"])
def test_bad_inputs_exit_2(capsys, tmp_path, artifacts, case):
    x = np.load(artifacts["x"])
    path = tmp_path / "bad.npy"
    if case == "complex":
        np.save(path, x.astype(np.complex128))
    elif case == "uint64":
        np.save(path, np.abs(x).astype(np.uint64))
    elif case == "bool":
        np.save(path, x > 0)
    elif case == "empty-batch":
        np.save(path, x[:, :0])
    elif case == "empty-time":
        np.save(path, x[:0])
    elif case == "nan":
        x[0, 0, 0, 0, 0] = np.nan
        np.save(path, x)
    elif case == "zero-bytes":
        path.write_bytes(b"")
    elif case == "npz":
        path = tmp_path / "bad.npz"
        np.savez(path, x=x)
    elif case == "object":
        np.save(path, np.array([None, 1], dtype=object), allow_pickle=True)
    elif case == "two-axes":
        np.save(path, x.reshape(2, -1))
    elif case == "truncated":
        np.save(path, x)
        path.write_bytes(path.read_bytes()[:-100])
    elif case == "huge-header":  # the header announces 10^12 values; nothing that large is allocated
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                     "shape": (1000, 1000, 1000, 1000)})
            f.write(b"\0" * 64)
    for target in ("onnx", "nir"):
        run_refused(capsys, tmp_path, target, artifacts[target], path, contains=(path.name,))
