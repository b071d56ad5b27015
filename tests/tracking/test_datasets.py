"""Benchmark datasets in their official layouts, results files in the toolkits' layouts and the
generated benchmark (spikedeploy.tracking.datasets). The got10k package (0.1.2) is the oracle for
the OTB and GOT-10k layouts: its dataset classes read the same folders, and its experiments'
``report`` reads the results files written here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikedeploy.errors import ConfigError, InputError, OutputPathError
from spikedeploy.fsutil import MARKER
from spikedeploy.tracking import datasets as D
from spikedeploy.tracking.synth import generate_sequence

#: small generated sequences (the generator's minimum frame side is 96)
N_FRAMES, SIZE = 6, (96, 128)
#: JPEG quality 95, 4:4:4, on these noisy frames: measured mean absolute error 1.4-3.0 grey levels
#: per channel and maximum 15-21 (seeds 0-3); the bounds leave room for other libjpeg builds
JPEG_MEAN_ABS, JPEG_MAX_ABS = 4.0, 40


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def _touch_frames(folder: Path, n: int, ext: str = "jpg", digits: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"{i:0{digits}d}.{ext}").write_bytes(b"")


def _boxes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = np.round(rng.uniform(1, 90, size=(n, 4)), 2)
    b[:, 2:] += 5
    return b


def _write_rows(path: Path, rows: np.ndarray, sep: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sep.join(f"{v:g}" for v in r) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------------
# the generated benchmark, every layout
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two PNG sequences of every format (and the in-memory sequences they came from)."""
    root = tmp_path_factory.mktemp("generated")
    out = {fmt: D.make_dataset(root / fmt, format=fmt, count=2, num_frames=N_FRAMES, first_seed=3, frame_size=SIZE,
                               image_format="png") for fmt in D.FORMATS}
    seqs = {s: generate_sequence(s, "heldout", N_FRAMES, SIZE) for s in (3, 4)}
    return out, seqs


@pytest.mark.parametrize("fmt", D.FORMATS)
def test_generated_png_dataset_reads_back_bit_exact(generated, fmt):
    datasets, seqs = generated
    ds = datasets[fmt]
    again = D.read_dataset(ds.root)  # auto-detected
    assert ds.format == again.format == fmt and D.detect_format(ds.root) == fmt
    assert ds.names == again.names == ("synthetic-3", "synthetic-4")
    for seed, seq in zip((3, 4), again):
        src = seqs[seed]
        assert seq.num_frames == N_FRAMES and seq.full_ground_truth
        assert np.array_equal(seq.ground_truth, src.boxes) and seq.ground_truth.dtype == np.float64
        assert np.array_equal(seq.init_box, src.boxes[0])
        frames = seq.load_frames()
        assert frames.dtype == np.uint8 and np.array_equal(frames, src.frames)  # PNG: lossless
        assert np.array_equal(seq.load_frame(2), src.frames[2])
        assert np.array_equal(np.stack(list(seq.iter_frames(1, 3))), src.frames[1:3])
        assert seq.image_size() == SIZE
        base = D.synthetic_attributes(src.boxes, src.visible, SIZE)
        assert seq.attributes[: len(base)] == base
        if fmt == "otb":
            assert seq.absent is None
        else:
            assert np.array_equal(seq.absent, src.visible <= 0)
        if fmt == "got10k":
            assert seq.meta["resolution"] == f"({SIZE[1]}, {SIZE[0]})"
            assert seq.attributes[len(base):] == (f"object_class={src.info['target']}",)
    assert (ds.root / "README.txt").is_file() and (ds.root / MARKER).is_file()


def test_generated_layout_file_names(generated):
    datasets, _ = generated
    otb, lasot, got = (datasets[f].root for f in D.FORMATS)
    assert (otb / "synthetic-3" / "img" / "0001.png").is_file() and (otb / "synthetic-3" / "groundtruth_rect.txt").is_file()
    assert (lasot / "synthetic" / "synthetic-3" / "img" / "00000001.png").is_file()
    assert (lasot / "testing_set.txt").read_text().split() == ["synthetic-3", "synthetic-4"]
    for f in ("groundtruth.txt", "full_occlusion.txt", "out_of_view.txt", "nlp.txt", "attributes.txt"):
        assert (lasot / "synthetic" / "synthetic-4" / f).is_file()
    assert (lasot / "synthetic" / "synthetic-4" / "full_occlusion.txt").read_text().count("\n") == 1  # one line
    assert (got / "list.txt").read_text().split() == ["synthetic-3", "synthetic-4"]
    for f in ("00000001.png", "groundtruth.txt", "cover.label", "absence.label", "cut_by_image.label", "meta_info.ini"):
        assert (got / "synthetic-3" / f).is_file()


def test_generated_jpeg_default(tmp_path):
    ds = D.make_dataset(tmp_path / "otb", count=1, num_frames=3, frame_size=SIZE)
    assert ds.format == "otb" and ds[0].frame_paths[0].endswith(os.path.join("synthetic-0", "img", "0001.jpg"))
    src = generate_sequence(0, "heldout", 3, SIZE)
    diff = np.abs(ds[0].load_frames().astype(int) - src.frames.astype(int))
    assert diff.mean() < JPEG_MEAN_ABS and diff.max() < JPEG_MAX_ABS
    assert np.array_equal(ds[0].ground_truth, src.boxes)


def test_make_dataset_output_rules_and_options(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputPathError, match="did not write"):
        D.make_dataset(foreign, count=1, num_frames=2, frame_size=SIZE)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    ds = D.make_dataset(foreign, count=1, num_frames=2, frame_size=SIZE, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep" and len(ds) == 1
    # an earlier output of make-dataset is replaced whole (its files only)
    ds = D.make_dataset(tmp_path / "d", count=2, num_frames=2, frame_size=SIZE)
    ds = D.make_dataset(tmp_path / "d", count=1, num_frames=2, first_seed=5, frame_size=SIZE)
    assert ds.names == ("synthetic-5",) and not (tmp_path / "d" / "synthetic-0").exists()
    for bad, err in [(dict(format="vot"), ConfigError), (dict(image_format="bmp"), ConfigError),
                     (dict(count=0), ConfigError), (dict(split="test"), ConfigError),
                     (dict(frame_size=(20, 20)), ConfigError)]:
        with pytest.raises(err):
            D.make_dataset(tmp_path / "x", **{"count": 1, "num_frames": 2, "frame_size": SIZE, **bad})
    assert not (tmp_path / "x").exists()


def test_synthetic_attribute_rules():
    b = np.array([[10, 10, 20, 20], [10, 10, 20, 20]], float)
    assert D.synthetic_attributes(b, np.ones(2), (100, 100)) == ()
    sv = np.array([[10, 10, 20, 20], [10, 10, 41, 41]], float)  # scale 20 -> 41: > 2x
    assert D.synthetic_attributes(sv, np.ones(2), (100, 100)) == ("SV",)
    assert D.synthetic_attributes(np.array([[10, 10, 20, 20], [10, 10, 40, 40]], float), np.ones(2), (100, 100)) == ()
    assert D.synthetic_attributes(b, np.array([1.0, 0.89]), (100, 100)) == ("OCC",)
    fm = np.array([[10, 10, 20, 20], [31, 10, 20, 20]], float)  # center moves 21 px
    assert D.synthetic_attributes(fm, np.ones(2), (100, 100)) == ("FM",)
    assert D.synthetic_attributes(np.array([[0, 10, 20, 20]], float), np.ones(1), (100, 100)) == ("OV",)
    assert D.synthetic_attributes(np.array([[70, 10, 30, 20]], float), np.ones(1), (100, 100)) == ("OV",)
    assert D.synthetic_attributes(np.array([[10, 10, 19, 21]], float), np.ones(1), (100, 100)) == ("LR",)


# ---------------------------------------------------------------------------------------------
# OTB: hand-written quirks, got10k's OTB class as the oracle
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def otb_root(tmp_path):
    """Official OTB names with the quirks: comma, tab and space separators, two targets in one
    folder, an empty ground-truth file, a frame-range exception, an attributes file."""
    root = tmp_path / "OTB100"
    for name, sep, n in (("Basketball", ",", 5), ("Bolt", "\t", 4), ("Boy", " ", 3)):
        _touch_frames(root / name / "img", n)
        _write_rows(root / name / "groundtruth_rect.txt", _boxes(n, len(name)), sep)
    _touch_frames(root / "Jogging" / "img", 4)
    _write_rows(root / "Jogging" / "groundtruth_rect.1.txt", _boxes(4, 1), ",")
    _write_rows(root / "Jogging" / "groundtruth_rect.2.txt", _boxes(4, 2), "\t")
    _touch_frames(root / "Human4" / "img", 3)
    (root / "Human4" / "groundtruth_rect.1.txt").write_text("\n")
    _write_rows(root / "Human4" / "groundtruth_rect.2.txt", _boxes(3, 3), ",")
    _touch_frames(root / "David" / "img", 770)
    _write_rows(root / "David" / "groundtruth_rect.txt", _boxes(471, 4), ",")
    (root / "Basketball" / "attributes.txt").write_text("IV\nOCC\n\nDEF\nOCC\n")
    return root


def test_otb_quirks_match_got10k(otb_root, capsys):
    from got10k.datasets import OTB

    ds = D.read_dataset(otb_root)
    assert ds.format == "otb"
    assert ds.names == ("Basketball", "Bolt", "Boy", "David", "Human4", "Jogging.1", "Jogging.2")
    oracle = OTB(str(otb_root), version=2015, download=False)
    assert sorted(oracle.seq_names) == sorted(ds.names)
    for name in ds.names:
        img_files, anno = oracle[name]
        seq = ds[name]
        assert list(seq.frame_paths) == img_files
        assert np.array_equal(seq.ground_truth, anno)
        assert seq.absent is None
    assert ds["David"].num_frames == 471 and ds["David"].frame_paths[0].endswith("0300.jpg")
    assert ds["David"].frame_paths[-1].endswith("0770.jpg")
    assert ds["Basketball"].attributes == ("IV", "OCC", "DEF") and ds["Bolt"].attributes == ()
    assert not np.array_equal(ds["Jogging.1"].ground_truth, ds["Jogging.2"].ground_truth)
    capsys.readouterr()  # got10k's warnings about the sequences this fixture lacks


def test_otb_png_frames_and_subset(tmp_path):
    root = tmp_path / "otb"
    _touch_frames(root / "Seq" / "img", 3, "png")
    _write_rows(root / "Seq" / "groundtruth_rect.txt", _boxes(3), ",")
    _touch_frames(root / "Other" / "img", 2)
    _write_rows(root / "Other" / "groundtruth_rect.txt", _boxes(2), ",")
    (root / "notes").mkdir()  # neither frames nor ground truth: not a sequence
    ds = D.read_dataset(root, "otb")
    assert ds.names == ("Other", "Seq") and ds["Seq"].frame_paths[0].endswith("0001.png")
    sub = ds.subset(["Seq", "Other"])
    assert sub.names == ("Seq", "Other") and sub["Seq"] is ds["Seq"] and len(sub) == 2 and "Seq" in sub
    assert ds[1] is ds["Seq"]
    with pytest.raises(ConfigError, match="no sequence 'Nope'"):
        ds.subset(["Nope"])
    with pytest.raises(ConfigError, match="twice"):
        ds.subset(["Seq", "Seq"])
    with pytest.raises(ValueError):
        ds["Seq"].ground_truth[0, 0] = 1.0  # read-only


# ---------------------------------------------------------------------------------------------
# LaSOT
# ---------------------------------------------------------------------------------------------


def _lasot_seq(root: Path, name: str, n: int, occ=None, oov=None) -> np.ndarray:
    folder = root / name.rsplit("-", 1)[0] / name
    _touch_frames(folder / "img", n, digits=8)
    gt = _boxes(n, n)
    _write_rows(folder / "groundtruth.txt", gt, ",")
    for fname, flags in (("full_occlusion.txt", occ), ("out_of_view.txt", oov)):
        if flags is not None:
            (folder / fname).write_text(",".join(str(v) for v in flags) + "\n")
    return gt


def test_lasot_absence_order_and_testing_set(tmp_path):
    root = tmp_path / "LaSOT"
    gt1 = _lasot_seq(root, "airplane-1", 4, occ=[0, 1, 0, 0], oov=[0, 0, 0, 1])
    _lasot_seq(root, "airplane-10", 3, occ=[0, 0, 0])
    _lasot_seq(root, "airplane-2", 2)
    _lasot_seq(root, "bear-3", 2, oov=[1, 0])
    ds = D.read_dataset(root)
    assert ds.format == "lasot"
    assert ds.names == ("airplane-1", "airplane-2", "airplane-10", "bear-3")
    assert np.array_equal(ds["airplane-1"].ground_truth, gt1)
    assert ds["airplane-1"].absent.tolist() == [False, True, False, True]
    assert ds["airplane-10"].absent.tolist() == [False] * 3 and ds["airplane-2"].absent is None
    assert ds["bear-3"].absent.tolist() == [True, False]
    assert ds["airplane-1"].frame_paths[0].endswith(os.path.join("airplane-1", "img", "00000001.jpg"))
    (root / "testing_set.txt").write_text("bear-3\nairplane-10\n")
    assert D.read_dataset(root).names == ("bear-3", "airplane-10")
    (root / "testing_set.txt").write_text("bear-3\ncat-1\n")
    with pytest.raises(InputError) as e:
        D.read_dataset(root)
    assert "testing_set.txt" in _one_line(e) and "cat-1" in str(e.value)


def test_lasot_bad_label_files(tmp_path):
    root = tmp_path / "LaSOT"
    _lasot_seq(root, "cat-1", 3, occ=[0, 1])
    with pytest.raises(InputError) as e:
        D.read_dataset(root, "lasot")
    assert str(root / "cat" / "cat-1" / "full_occlusion.txt") in _one_line(e) and "2 labels for 3 frames" in str(e.value)
    (root / "cat" / "cat-1" / "full_occlusion.txt").write_text("0,2,0\n")
    with pytest.raises(InputError, match="label 2 is 2"):
        D.read_dataset(root, "lasot")


# ---------------------------------------------------------------------------------------------
# GOT-10k: got10k's GOT10k class as the oracle
# ---------------------------------------------------------------------------------------------


def _got_seq(split: Path, name: str, n: int, *, one_line: bool, cover=None, meta=None) -> np.ndarray:
    folder = split / name
    _touch_frames(folder, n, digits=8)
    gt = _boxes(n, n)
    _write_rows(folder / "groundtruth.txt", gt[:1] if one_line else gt, ",")
    if cover is not None:
        (folder / "cover.label").write_text("".join(f"{c}\n" for c in cover))
        (folder / "absence.label").write_text("".join(f"{int(c == 0)}\n" for c in cover))
        (folder / "cut_by_image.label").write_text("0\n" * n)
    if meta is not None:
        (folder / "meta_info.ini").write_text("[METAINFO]\n" + "".join(f"{k}: {v}\n" for k, v in meta.items()))
    return gt


def test_got10k_test_and_val_splits_match_got10k(tmp_path):
    from got10k.datasets import GOT10k

    root = tmp_path / "GOT-10k"
    gt_t = _got_seq(root / "test", "GOT-10k_Test_000001", 5, one_line=True)
    _got_seq(root / "test", "GOT-10k_Test_000002", 3, one_line=True)
    (root / "test" / "list.txt").write_text("GOT-10k_Test_000001\nGOT-10k_Test_000002\n")
    meta = {"url": "https://example.org/v", "begin_time": "00:00:10", "object_class": "ant",
            "motion_class": "crawling", "major_class": "insect", "root_class": "animal", "motion_adverb": "slowly",
            "resolution": "(1280, 720)"}
    gt_v = _got_seq(root / "val", "GOT-10k_Val_000001", 4, one_line=False, cover=[8, 0, 3, 8], meta=meta)
    (root / "val" / "list.txt").write_text("GOT-10k_Val_000001\n")

    with pytest.raises(InputError, match="several GOT-10k splits") as e:
        D.read_dataset(root)
    _one_line(e)
    test = D.read_dataset(root / "test")
    assert test.format == "got10k" and test.root == root / "test"
    assert test.names == ("GOT-10k_Test_000001", "GOT-10k_Test_000002")
    seq = test[0]
    assert seq.ground_truth.shape == (1, 4) and not seq.full_ground_truth and seq.num_frames == 5
    assert np.array_equal(seq.init_box, gt_t[0]) and seq.absent is None and seq.meta == {}
    oracle = GOT10k(str(root), subset="test")
    for name in test.names:
        img_files, anno = oracle[name]
        assert list(test[name].frame_paths) == img_files and np.array_equal(test[name].ground_truth, anno)

    val = D.read_dataset(root / "val", "got10k")
    v = val[0]
    assert np.array_equal(v.ground_truth, gt_v) and v.full_ground_truth
    oracle = GOT10k(str(root), subset="val", return_meta=True)
    img_files, anno, ometa = oracle[0]
    assert list(v.frame_paths) == img_files and np.array_equal(v.ground_truth, anno)
    assert v.absent.tolist() == (ometa["cover"] == 0).tolist() == [False, True, False, False]
    assert v.meta["begin_time"] == "00:00:10" and v.meta["resolution"] == ometa["resolution"]
    assert v.attributes == ("object_class=ant", "motion_class=crawling", "major_class=insect", "root_class=animal",
                            "motion_adverb=slowly")
    # a root holding only one split is accepted
    only = tmp_path / "only"
    only.mkdir()
    (root / "test").rename(only / "test")
    assert D.read_dataset(only).names == test.names and D.read_dataset(only).root == only / "test"


def test_got10k_count_rule(tmp_path):
    split = tmp_path / "val"
    folder = split / "s"
    _touch_frames(folder, 4, digits=8)
    _write_rows(folder / "groundtruth.txt", _boxes(2), ",")  # neither 1 nor 4 boxes
    (split / "list.txt").write_text("s\n")
    with pytest.raises(InputError) as e:
        D.read_dataset(split)
    assert str(folder / "groundtruth.txt") in _one_line(e) and "2 boxes for 4 frames" in str(e.value)
    (split / "list.txt").write_text("s\nmissing\n")
    _write_rows(folder / "groundtruth.txt", _boxes(4), ",")
    with pytest.raises(InputError, match="names 'missing'"):
        D.read_dataset(split)


# ---------------------------------------------------------------------------------------------
# format detection and bad input
# ---------------------------------------------------------------------------------------------


def test_detection_refuses_empty_missing_and_ambiguous(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        D.read_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as e:
        D.read_dataset(tmp_path / "empty")
    assert str(tmp_path / "empty") in _one_line(e) and "OTB" in str(e.value) and "GOT-10k" in str(e.value)
    both = tmp_path / "both"
    _touch_frames(both / "Seq" / "img", 2)
    _write_rows(both / "Seq" / "groundtruth_rect.txt", _boxes(2), ",")
    (both / "list.txt").write_text("Seq\n")
    with pytest.raises(InputError, match="got10k and otb") as e:
        D.read_dataset(both)
    _one_line(e)
    assert D.read_dataset(both, "otb").names == ("Seq",)
    with pytest.raises(ConfigError, match="unknown dataset format"):
        D.read_dataset(both, "vot")


def test_bad_otb_input_names_the_file(tmp_path):
    root = tmp_path / "otb"
    _touch_frames(root / "Seq" / "img", 3)
    _write_rows(root / "Other" / "groundtruth_rect.txt", _boxes(3), ",")
    _touch_frames(root / "Other" / "img", 3)
    with pytest.raises(InputError) as e:  # frames without ground truth
        D.read_dataset(root, "otb")
    assert str(root / "Seq" / "groundtruth_rect.txt") in _one_line(e)
    gt = root / "Seq" / "groundtruth_rect.txt"
    gt.write_text("1,2,3,4\n1,2,3\n5,6,7,8\n")
    with pytest.raises(InputError) as e:
        D.read_dataset(root)
    assert str(gt) in _one_line(e) and "line 2 has 3 fields" in str(e.value)
    gt.write_text("1,2,3,4\n1,2,x,4\n5,6,7,8\n")
    with pytest.raises(InputError, match="line 2 .* is not 4 numbers"):
        D.read_dataset(root)
    gt.write_text("1,2,3,4\n5,6,7,8\n")  # fewer boxes than frames
    with pytest.raises(InputError) as e:
        D.read_dataset(root)
    assert str(gt) in _one_line(e) and "2 boxes for 3 frames" in str(e.value)
    gt.write_text("1,2,3,4\n5,6,7,8\n1,1,1,1\n2,2,2,2\n")  # more boxes than frames
    with pytest.raises(InputError, match="4 boxes for 3 frames"):
        D.read_dataset(root)
    gt.write_text("1,2,3,4\n5,6,inf,8\n1,1,1,1\n")
    with pytest.raises(InputError, match="infinite"):
        D.read_dataset(root)
    gt.write_text("1,2,3,4\nnan,nan,nan,nan\n1,1,0,0\n")  # absent/invalid rows are data, not errors
    ds = D.read_dataset(root)
    assert np.isnan(ds["Seq"].ground_truth[1]).all()
    gt.write_text("\n")
    with pytest.raises(InputError, match="is empty"):
        D.read_dataset(root)
    gt.write_text("1,2,3,4\n5,6,7,8\n1,1,1,1\n")
    (root / "Seq" / "img" / "0002.png").write_bytes(b"")
    with pytest.raises(InputError, match="mixes"):
        D.read_dataset(root)
    (root / "Seq" / "img" / "0002.png").unlink()
    (root / "Seq" / "attributes.txt").write_text("SV OCC\n")
    with pytest.raises(InputError, match="attributes.txt: line 1"):
        D.read_dataset(root)


def test_unreadable_frame_is_named_on_load(tmp_path):
    root = tmp_path / "otb"
    img = root / "Seq" / "img"
    img.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(img / "0001.png")
    (img / "0002.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((9, 10, 3), np.uint8)).save(img / "0003.png")
    _write_rows(root / "Seq" / "groundtruth_rect.txt", _boxes(3), ",")
    seq = D.read_dataset(root)["Seq"]  # lazy: listing succeeds
    with pytest.raises(InputError) as e:
        seq.load_frames()
    assert str(img / "0002.png") in _one_line(e)
    two_sizes = D.TrackingSequence("Seq", (img / "0001.png", img / "0003.png"), _boxes(2))
    with pytest.raises(InputError, match="0003.png .* is 10x9"):
        two_sizes.load_frames()
    assert seq.load_frames(0, 1).shape == (1, 8, 10, 3)


# ---------------------------------------------------------------------------------------------
# results files
# ---------------------------------------------------------------------------------------------


def _awkward_boxes(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    b = rng.uniform(-50, 500, size=(n, 4))
    b[0] = [10.0, 20.0, 30.0, 40.0]
    b[1] = [0.1 + 0.2, 1e-300, 123456789.123456789, -0.0]
    return b


@pytest.mark.parametrize("fmt", D.FORMATS)
def test_results_round_trip_exact_in_the_toolkit_layout(tmp_path, fmt):
    boxes, times = _awkward_boxes(9), np.random.default_rng(1).uniform(1e-4, 0.5, 9)
    box_path, time_path = D.write_sequence_results(tmp_path, "spiketrack-torch", "Jogging.1", boxes, times, fmt)
    rel = (box_path.relative_to(tmp_path).as_posix(), time_path.relative_to(tmp_path).as_posix())
    assert rel == {"otb": ("spiketrack-torch/Jogging.1.txt", "spiketrack-torch/times/Jogging.1_time.txt"),
                   "lasot": ("spiketrack-torch/Jogging.1.txt", "spiketrack-torch/times/Jogging.1_time.txt"),
                   "got10k": ("spiketrack-torch/Jogging.1/Jogging.1_001.txt",
                              "spiketrack-torch/Jogging.1/Jogging.1_time.txt")}[fmt]
    b, t = D.read_sequence_results(tmp_path, "spiketrack-torch", "Jogging.1", fmt, num_frames=9)
    assert np.array_equal(b, boxes) and np.array_equal(t, times)
    assert np.signbit(b[1, 3])  # -0.0 survives
    # the toolkits' own readers (got10k's ExperimentOTB/ExperimentGOT10k.report)
    assert np.array_equal(np.loadtxt(box_path, delimiter=","), boxes)
    if fmt == "got10k":
        assert np.array_equal(np.loadtxt(time_path, delimiter=","), times)
    else:
        assert np.array_equal(np.loadtxt(time_path), times)
    assert D.results_complete(tmp_path, "spiketrack-torch", "Jogging.1", fmt, num_frames=9)
    assert not D.results_complete(tmp_path, "spiketrack-torch", "Jogging.1", fmt, num_frames=10)
    assert D.result_trackers(tmp_path, fmt) == ("spiketrack-torch",)


def test_results_errors_and_completeness(tmp_path):
    seq = D.TrackingSequence("S", tuple(f"/x/{i}.jpg" for i in range(3)), _boxes(3))
    assert not D.results_complete(tmp_path, "t", seq)
    with pytest.raises(InputError) as e:
        D.read_sequence_results(tmp_path, "t", "S")
    assert str(tmp_path / "t" / "S.txt") in _one_line(e)
    D.write_sequence_results(tmp_path, "t", "S", _boxes(3), [0.1, 0.1, 0.1])
    assert D.results_complete(tmp_path, "t", seq)
    (tmp_path / "t" / "S.txt").write_text("1,2,3,4\n1,2,3\n5,6,7,8\n")  # garbled
    assert not D.results_complete(tmp_path, "t", seq)
    with pytest.raises(InputError, match="line 2 has 3 fields"):
        D.read_sequence_results(tmp_path, "t", "S")
    (tmp_path / "t" / "S.txt").write_text("1,2,3,4\n5,6,7,8\n")  # short
    assert not D.results_complete(tmp_path, "t", seq)
    with pytest.raises(InputError, match="times for the 2 boxes"):
        D.read_sequence_results(tmp_path, "t", "S")
    (tmp_path / "t" / "S.txt").write_text("1\t2\t3\t4\n5 6 7 8\n9,10,11,12\n")  # anyone's separators
    assert D.read_sequence_results(tmp_path, "t", "S")[0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    (tmp_path / "t" / "times" / "S_time.txt").unlink()
    assert D.read_sequence_results(tmp_path, "t", "S")[1] is None and not D.results_complete(tmp_path, "t", seq)
    for bad in ([[1, 2, 3]], [[1, 2, np.nan, 4]]):
        with pytest.raises(InputError):
            D.write_sequence_results(tmp_path, "t", "S", bad, [0.1])
    with pytest.raises(InputError, match="2 times for 3 boxes"):
        D.write_sequence_results(tmp_path, "t", "S", _boxes(3), [0.1, 0.2])
    for name in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ConfigError):
            D.write_sequence_results(tmp_path, name, "S", _boxes(3), [0.1] * 3)
    with pytest.raises(ConfigError, match="unknown results format"):
        D.result_trackers(tmp_path, "vot")


def test_result_trackers_lists_only_result_folders(tmp_path):
    D.write_sequence_results(tmp_path, "b", "S", _boxes(2), [0.1, 0.1], "otb")
    D.write_sequence_results(tmp_path, "a", "S", _boxes(2), [0.1, 0.1], "otb")
    D.write_sequence_results(tmp_path / "g", "c", "S", _boxes(2), [0.1, 0.1], "got10k")
    (tmp_path / "reports").mkdir()
    (tmp_path / ".a.tmp").mkdir()
    (tmp_path / ".a.tmp" / "S.txt").write_text("1,2,3,4\n")
    assert D.result_trackers(tmp_path, "otb") == ("a", "b")
    assert D.result_trackers(tmp_path / "g", "got10k") == ("c",) and D.result_trackers(tmp_path / "g", "otb") == ()
    with pytest.raises(InputError):
        D.result_trackers(tmp_path / "missing")


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    D.write_sequence_results(tmp_path, "t", "S", _boxes(3, 1), [0.1, 0.2, 0.3])
    before = {p: p.read_bytes() for p in (tmp_path / "t").rglob("*") if p.is_file()}
    real = os.replace
    calls = []

    def interrupted(src, dst):
        calls.append(dst)
        if str(dst).endswith("S.txt"):  # the times file is replaced, the boxes file is not
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        D.write_sequence_results(tmp_path, "t", "S", _boxes(3, 2), [0.4, 0.5, 0.6])
    monkeypatch.setattr(os, "replace", real)
    assert len(calls) == 2
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "t").rglob("*") if p.is_file())
    assert files == ["t/S.txt", "t/times/S_time.txt"]  # no temporary file left
    assert (tmp_path / "t" / "S.txt").read_bytes() == before[tmp_path / "t" / "S.txt"]
    assert np.array_equal(D.read_sequence_results(tmp_path, "t", "S")[0], _boxes(3, 1))


# ---------------------------------------------------------------------------------------------
# got10k's experiments read what is written here
# ---------------------------------------------------------------------------------------------


def test_got10k_experiment_otb_reports_our_results(tmp_path, capsys):
    from got10k.datasets import OTB
    from got10k.experiments import ExperimentOTB

    root = tmp_path / "OTB"
    names = ("Basketball", "Jogging")
    for name in names:
        _touch_frames(root / name / "img", 5)
    _write_rows(root / "Basketball" / "groundtruth_rect.txt", _boxes(5, 1), "\t")
    _write_rows(root / "Jogging" / "groundtruth_rect.1.txt", _boxes(5, 2), ",")
    _write_rows(root / "Jogging" / "groundtruth_rect.2.txt", _boxes(5, 3), " ")
    ds = D.read_dataset(root)
    results = tmp_path / "results" / "OTB2015"
    rng = np.random.default_rng(0)
    times = {}
    for seq in ds:
        times[seq.name] = rng.uniform(0.01, 0.1, seq.num_frames)
        D.write_sequence_results(results, "mine", seq.name, seq.ground_truth + 1.5, times[seq.name], "otb")
    exp = ExperimentOTB.__new__(ExperimentOTB)  # its constructor would download OTB
    exp.dataset = OTB(str(root), version=2015, download=False)
    exp.result_dir, exp.report_dir, exp.nbins_iou, exp.nbins_ce = str(results), str(tmp_path / "reports"), 21, 51
    perf = exp.report(["mine"])["mine"]
    assert sorted(perf["seq_wise"]) == sorted(ds.names) == ["Basketball", "Jogging.1", "Jogging.2"]
    for name, t in times.items():
        assert perf["seq_wise"][name]["speed_fps"] == np.mean(1.0 / t)  # our times file was read
    capsys.readouterr()


def test_got10k_experiment_got10k_reports_our_results(tmp_path, capsys):
    from got10k.experiments import ExperimentGOT10k

    ds = D.make_dataset(tmp_path / "GOT-10k" / "val", format="got10k", count=2, num_frames=N_FRAMES, frame_size=SIZE)
    exp = ExperimentGOT10k(str(tmp_path / "GOT-10k"), subset="val", result_dir=str(tmp_path / "results"),
                           report_dir=str(tmp_path / "reports"))
    results = tmp_path / "results" / "GOT-10k"
    rng = np.random.default_rng(0)
    times = {}
    for seq in ds:
        times[seq.name] = rng.uniform(0.01, 0.1, seq.num_frames)
        D.write_sequence_results(results, "mine", seq.name, seq.ground_truth, times[seq.name], "got10k")
    perf = exp.report(["mine"])["mine"]
    assert sorted(perf["seq_wise"]) == list(ds.names)
    for seq in ds:
        w = perf["seq_wise"][seq.name]
        assert w["length"] == N_FRAMES - 1
        assert w["speed_fps"] == np.mean(1.0 / times[seq.name])  # our times file was read
        assert w["ao"] > 0.99  # the ground truth itself, scored on frames 2.. where cover > 0
    capsys.readouterr()



_WRITER = """
import os, sys, time
import numpy as np
from spikedeploy.tracking.datasets import write_sequence_results
results, n, fmt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
write_sequence_results(results, "t", "S", np.full((n, 4), 1.0), np.full(n, 0.01), fmt)

def stalled_fsync(fd):  # the second write stops inside its first file write, data not yet renamed
    print("writing", flush=True)
    time.sleep(600)

os.fsync = stalled_fsync
write_sequence_results(results, "t", "S", np.full((n, 4), 2.0), np.full(n, 0.02), fmt)
"""


@pytest.mark.parametrize("fmt", ["otb", "got10k"])
def test_sigkill_during_a_write_leaves_the_previous_files(tmp_path, fmt):
    """A writer killed (SIGKILL) in the middle of rewriting a sequence's results (its new data
    written to disk, not yet in place) leaves the previous complete files at the results paths."""
    import signal
    import subprocess
    import sys

    n = 1000
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(n), fmt], stdout=subprocess.PIPE,
                            cwd=str(Path(__file__).resolve().parents[2]))
    try:
        assert proc.stdout.readline().strip() == b"writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    boxes, times = D.read_sequence_results(tmp_path, "t", "S", fmt, num_frames=n)
    assert (boxes == 1.0).all() and (times == 0.01).all()
    assert D.results_complete(tmp_path, "t", "S", fmt, num_frames=n)
    assert D.result_trackers(tmp_path, fmt) == ("t",)
