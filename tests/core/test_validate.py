"""The boundary checks of :mod:`spikedeploy.validate` and the loaders that use them: .npy files
(header first), run inputs, IR graphs from artifacts, checkpoints, clips, ground-truth boxes and
the initial box. Every refusal is one line naming the file/field, with exit code 2."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from spikedeploy import validate as V
from spikedeploy.api import load_input_file
from spikedeploy.checkpoint import apply_state_dict, load_checkpoint
from spikedeploy.errors import (ArtifactError, CheckpointError, GraphValidationError, InputError,
                                SpikedeployError)
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.tracking.run import load_boxes, load_frames


def _one_line(exc) -> str:
    s = str(exc.value if hasattr(exc, "value") else exc)
    assert "\n" not in s and "\r" not in s
    return s


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_error_messages_are_one_line_and_exit_codes():
    e = ArtifactError("bad file\n  Traceback-like second line\r\nthird")
    assert str(e) == "bad file Traceback-like second line third"
    assert ArtifactError.exit_code == 2 and issubclass(ArtifactError, InputError)
    assert GraphValidationError.exit_code == 1  # an internal graph spikedeploy built; files are ArtifactError
    assert V.one_line("a\n\nb", limit=3) == "a b"[:3] and V.one_line("x" * 50, limit=10) == "xxxxxxx..."


# ---------------------------------------------------------------------------------------------
# .npy files and run inputs
# ---------------------------------------------------------------------------------------------


def test_read_npy_checks_the_header_before_loading(tmp_path):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.npy is empty \(0 bytes\)"):
        V.read_npy(empty, "input file", max_elements=100)
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:  # 10^12 doubles announced, 8 bytes of data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)})
        f.write(b"\0" * 8)
    with pytest.raises(InputError, match=r"huge.npy holds 1000000000000 elements.*more than the limit 100"):
        V.read_npy(huge, "input file", max_elements=100)
    cut = tmp_path / "cut.npy"
    np.save(cut, np.zeros(50))
    cut.write_bytes(cut.read_bytes()[:-8])
    with pytest.raises(InputError, match=r"cut.npy is truncated"):
        V.read_npy(cut, "clip", max_elements=100)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="objects or records"):
        V.read_npy(obj, "input file", max_elements=100)
    text = tmp_path / "text.npy"
    text.write_text("1,2,3")
    with pytest.raises(InputError, match="cannot read input file .*text.npy as .npy"):
        V.read_npy(text, "input file", max_elements=100)
    with pytest.raises(InputError, match="does not exist"):
        V.read_npy(tmp_path / "missing.npy", "input file", max_elements=100)
    big_endian = tmp_path / "be.npy"
    np.save(big_endian, np.arange(6, dtype=">i4").reshape(2, 3))
    a = V.read_npy(big_endian, "input file", max_elements=100)
    assert a.dtype.isnative and a.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("dtype, ok", [("float64", True), ("float32", True), ("float16", True), ("int8", True),
                                       ("int64", True), ("uint8", True), ("uint32", True), (">f8", True),
                                       (">i2", True), ("uint64", False), ("bool", False), ("complex64", False),
                                       ("complex128", False), ("longdouble", False), ("U3", False),
                                       ("datetime64[s]", False)])
def test_input_dtypes(tmp_path, dtype, ok):
    arr = np.ones((2, 3, 4), dtype=np.float64).astype(dtype)
    path = tmp_path / "x.npy"
    np.save(path, arr)
    if ok:
        x = load_input_file(path)
        assert isinstance(x, torch.Tensor) and list(x.shape) == [2, 3, 4] and float(x.double().sum()) == 24
    else:
        with pytest.raises(InputError) as ei:
            load_input_file(path)
        assert "x.npy" in _one_line(ei) and ei.value.exit_code == 2


@pytest.mark.parametrize("shape, match", [((0, 2, 3), "time axis T"), ((2, 0, 3), "batch axis B"),
                                          ((2, 2, 0), "axis 2"), ((2, 3), "3 to 8 axes"),
                                          ((1,) * 9, "more than the limit 8")])
def test_inputs_with_empty_or_wrong_axes(tmp_path, shape, match):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape))
    with pytest.raises(InputError, match=match):
        load_input_file(path)


def test_inputs_must_be_finite_and_single_arrays(tmp_path):
    x = np.zeros((1, 2, 3))
    x[0, 1, 2] = np.inf
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(InputError, match="1 NaN or Inf"):
        load_input_file(tmp_path / "inf.npy")
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 2, 3)))
    with pytest.raises(InputError, match=r"\.npz archive"):
        load_input_file(tmp_path / "x.npz")


def test_check_run_input_shape_and_steps():
    V.check_run_input(torch.zeros(2, 1, 3), "input 'x'", (3,), steps=2)
    with pytest.raises(InputError, match=r"must have shape \[T, B, 3\]"):
        V.check_run_input(np.zeros((2, 1, 4)), "input 'x'", (3,))
    with pytest.raises(InputError, match="T=3 time steps, but the graph needs T=2"):
        V.check_run_input(np.zeros((3, 1, 3)), "input 'x'", (3,), steps=2)
    with pytest.raises(InputError, match="complex"):
        V.check_run_input(torch.zeros(2, 1, 3, dtype=torch.complex64), "input 'x'", (3,))


# ---------------------------------------------------------------------------------------------
# IR graphs from artifacts
# ---------------------------------------------------------------------------------------------


def _conv_graph(**conv) -> Graph:
    op = O.Conv2d(weight=np.ones((2, 1, 3, 3)), **conv)
    return Graph(inputs=(TensorSpec("x", (1, 8, 8)),), nodes=(Node("c", op, ("x",)),), outputs=("c",))


def test_check_graph_accepts_a_good_graph_and_names_bad_fields():
    assert V.check_graph(_conv_graph(padding=(1, 1)), "f.nir")["c"] == (2, 8, 8)
    for kw, match in ((dict(stride=(0, 1)), r"f.nir: node 'c' \(Conv2d\): stride\[0\]: must be >= 1, got 0"),
                      (dict(padding=(-1, 0)), r"padding\[0\]: must be >= 0"),
                      (dict(groups=0), r"groups: must be >= 1"),
                      (dict(stride=("1", 1)), r"stride\[0\]: expected an integer, got '1'"),
                      (dict(dilation=(1, 1, 1)), r"dilation: expected 2 integers"),
                      (dict(groups=True), r"groups: expected an integer, got True")):
        with pytest.raises(ArtifactError, match=match) as ei:
            V.check_graph(_conv_graph(**kw), "f.nir", "export it again")
        assert _one_line(ei).endswith("export it again") and ei.value.exit_code == 2


def test_check_graph_limits_and_invariants():
    huge_in = Graph(inputs=(TensorSpec("x", (3, 100_000, 100_000)),), nodes=(), outputs=("x",))
    with pytest.raises(ArtifactError, match="more than the limit"):
        V.check_graph(huge_in, "g")
    up = O.Upsample(size=(100_000, 100_000), mode="nearest")
    big_out = Graph(inputs=(TensorSpec("x", (4, 2, 2)),), nodes=(Node("u", up, ("x",)),), outputs=("u",))
    with pytest.raises(ArtifactError, match=r"node 'u' \(Upsample\): its output \[4, 100000, 100000\] is larger"):
        V.check_graph(big_out, "g")
    loop = Graph(inputs=(TensorSpec("x", (4,)),), nodes=(Node("s", O.Scale(2.0), ("s",)),), outputs=("s",))
    with pytest.raises(ArtifactError, match="invalid graph: node 's'.*reads 's'"):
        V.check_graph(loop, "g")
    nan = O.AddConstant(value=np.array([np.nan, 0.0]))
    g = Graph(inputs=(TensorSpec("x", (2,)),), nodes=(Node("a", nan, ("x",)),), outputs=("a",))
    with pytest.raises(ArtifactError, match="NaN/Inf"):
        V.check_graph(g, "g")


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool, torch.int32])
def test_checkpoint_tensors_of_another_kind_are_refused(tmp_path, dtype):
    sd = _Net().state_dict()
    sd["fc.weight"] = torch.ones(2, 3).to(dtype)
    path = tmp_path / "ck.pt"
    torch.save(sd, path)
    state = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"fc.weight: model expects torch.float32 \(floating\), checkpoint has "
                                              rf"{dtype}") as ei:
        apply_state_dict(_Net(), state, source=str(path))
    assert "ck.pt" in _one_line(ei) and ei.value.exit_code == 2


def test_checkpoint_same_kind_other_precision_is_accepted(tmp_path):
    net = _Net()
    sd = {k: (v.half() if v.is_floating_point() else v.int()) for k, v in net.state_dict().items()}
    apply_state_dict(_Net(), sd, source="half")  # float16 for float32, int32 for int64: same kinds
    sd["bn.num_batches_tracked"] = torch.tensor(0.5)
    with pytest.raises(CheckpointError, match=r"bn.num_batches_tracked: model expects torch.int64 \(integer\)"):
        apply_state_dict(_Net(), sd, source="half")


@pytest.mark.parametrize("payload", [bytes(range(256)), b"\x80\x02}q\x00", b"hello world", b"PK\x03\x04junk",
                                     b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00junk"])
def test_random_bytes_are_not_a_checkpoint_and_never_advise_weights_only_false(tmp_path, payload, recwarn):
    path = tmp_path / "r.pt"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert len(recwarn) == 0  # torch's warnings about the odd stream are not printed beside the error
    msg = _one_line(ei)
    assert "r.pt" in msg and "weights_only=False" not in msg and "Python objects" not in msg
    assert "not a PyTorch checkpoint" in msg or "truncated or corrupt" in msg


def test_checkpoint_with_objects_is_explained_without_unsafe_advice(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(1), "cfg": object()}, path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    msg = _one_line(ei)
    assert "Python objects" in msg and "state_dict()" in msg and "weights_only=False" not in msg
    zipped = tmp_path / "z.pt"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("hello.txt", "not torch")
    with pytest.raises(CheckpointError, match="zip archive but not a PyTorch checkpoint"):
        load_checkpoint(zipped)


def test_cli_refuses_a_checkpoint_with_int_weights(tmp_path, capsys):
    from spikedeploy import api
    from spikedeploy.cli import main

    sd = api.build_model("sdt-test", model_kwargs={"image_size": 8}).module.state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point() and k.endswith("weight"))
    sd[key] = sd[key].round().long()
    torch.save(sd, tmp_path / "int.pt")
    rc = main(["export", "--target", "onnx", "--model-arg", "image_size=8", "--checkpoint", str(tmp_path / "int.pt"),
               "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "int.pt" in err[0] and f"{key}: model expects torch.float32" in err[0]
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------------------------


def test_npy_clips(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 5, 7, 3), dtype=np.uint8))
    assert load_frames(good).shape == (2, 5, 7, 3)
    cases = {
        "zero-bytes": (None, r"is empty \(0 bytes\)"),
        "no-frames": (np.zeros((0, 5, 7, 3), np.uint8), "holds no frames"),
        "float": (np.zeros((2, 5, 7, 3)), "must be an N x H x W x 3 uint8 array"),
        "gray": (np.zeros((2, 5, 7), np.uint8), "must be an N x H x W x 3 uint8 array"),
        "rgba": (np.zeros((2, 5, 7, 4), np.uint8), "must be an N x H x W x 3 uint8 array"),
        "zero-width": (np.zeros((2, 5, 0, 3), np.uint8), "each side must be 1 to"),
    }
    for name, (arr, match) in cases.items():
        p = tmp_path / f"{name}.npy"
        if arr is None:
            p.write_bytes(b"")
        else:
            np.save(p, arr)
        with pytest.raises(InputError, match=match) as ei:
            load_frames(p)
        assert f"{name}.npy" in _one_line(ei)
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (10 ** 6, 4096, 4096, 3)})
    with pytest.raises(InputError, match="more than the limit"):
        load_frames(huge)


def test_image_clips(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(folder / f"{i:03d}.png")
    frames = load_frames(folder)
    assert frames.shape == (3, 6, 8, 3) and frames.dtype == np.uint8 and frames[2, 0, 0, 0] == 80
    gif = tmp_path / "clip.gif"
    ims = [Image.fromarray(np.full((6, 8, 3), 60 * i, np.uint8)) for i in range(2)]
    ims[0].save(gif, save_all=True, append_images=ims[1:])
    assert load_frames(gif).shape == (2, 6, 8, 3)
    (folder / "004.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="004.png cannot be read"):
        load_frames(folder)
    (tmp_path / "bad.gif").write_bytes(b"GIF89a broken")
    with pytest.raises(InputError, match="bad.gif cannot be read"):
        load_frames(tmp_path / "bad.gif")


# ---------------------------------------------------------------------------------------------
# ground-truth boxes
# ---------------------------------------------------------------------------------------------


def test_ground_truth_absent_targets_stay_loadable(tmp_path):
    txt = tmp_path / "groundtruth.txt"
    txt.write_text("1,2,3,4\nNaN,NaN,NaN,NaN\n0,0,0,0\n5\t6\t-1\t2\n\n")
    boxes = load_boxes(txt, 4)
    assert boxes.shape == (4, 4) and np.isnan(boxes[1]).all() and boxes[3, 2] == -1
    js = tmp_path / "gt.json"
    js.write_text(json.dumps({"boxes": [[1, 2, 3, 4], [None, None, None, None]]}))
    assert np.isnan(load_boxes(js)[1]).all()
    npy = tmp_path / "gt.npy"
    np.save(npy, np.array([[1, 2, 3, 4], [np.nan] * 4], dtype=">f4"))
    assert load_boxes(npy).dtype == np.float64


@pytest.mark.parametrize("text, match", [("1,2,3,4\n1,2,3\n", "line 2 has 3 values"),
                                         ("1,2,3,4,5\n", "line 1 has 5 values"),
                                         ("x,y,w,h\n1,2,3,4\n", r"line 1 \('x,y,w,h'\) is not numbers"),
                                         ("", "holds no boxes"),
                                         ("1,2,3,4\ninf,2,3,4\n", "row 2 .* infinite"),
                                         ("1e30,2,3,4\n", "row 1 .* beyond")])
def test_malformed_ground_truth_text(tmp_path, text, match):
    p = tmp_path / "gt.txt"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as ei:
        load_boxes(p)
    assert "gt.txt" in _one_line(ei)


def test_malformed_ground_truth_files(tmp_path):
    for name, data, match in (("c.npy", np.ones((2, 4), np.complex64), "complex64 is not accepted"),
                              ("b.npy", np.ones((2, 4), bool), "bool is not accepted"),
                              ("s.npy", np.ones((2, 5)), r"N x 4.*\[2, 5\]")):
        np.save(tmp_path / name, data)
        with pytest.raises(InputError, match=match):
            load_boxes(tmp_path / name)
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_boxes(tmp_path / "e.npy")
    (tmp_path / "j.json").write_text(json.dumps([[1, 2, "3", 4]]))
    with pytest.raises(InputError, match="list of"):
        load_boxes(tmp_path / "j.json")
    (tmp_path / "t.txt").write_text("1,2,3,4\n")
    with pytest.raises(InputError, match="has 1 boxes but the clip has 3 frames"):
        load_boxes(tmp_path / "t.txt", 3)


# ---------------------------------------------------------------------------------------------
# the initial box
# ---------------------------------------------------------------------------------------------


def test_init_box_checks():
    from spikedeploy.tracking.tracker import InvalidBoxError, SpikeTrackTracker

    check = SpikeTrackTracker._check_box
    assert check([10, 20, 30, 40], 100, 200) == [10.0, 20.0, 30.0, 40.0]
    assert check(np.array([-10, -10, 20, 20]), 100, 200) == [-10.0, -10.0, 20.0, 20.0]  # partly outside: fine
    for box, match in (([0, 0, 1e30, 1e30], "larger than 2x"), ([0, 0, 10 ** 400, 5], "too large"),
                       ([0, 0, math.inf, 5], "non-finite"), ([0, 0, 0, 5], "must be > 0"),
                       ([500, 0, 5, 5], "outside"), ([0, 0, 401, 10], "larger than 2x"), ("1,2,3,4", "4 numbers"),
                       ([1, 2, 3], "4 numbers")):
        with pytest.raises(InvalidBoxError, match=match) as ei:
            check(box, 100, 200)
        assert ei.value.exit_code == 2 and isinstance(ei.value, SpikedeployError)
