"""spikedeploy.tracking.metrics against the toolkits themselves.

The oracle is the ``got10k`` package (0.1.2, the GOT-10k authors' toolkit, which also carries the
OTB protocol): its experiments' ``report()`` runs on results files written in their own layouts
into tmp_path, the experiment objects built without their constructors (those want an official
dataset folder and download it), and its ``rect_iou`` / ``center_error`` / ``_calc_metrics`` /
``_calc_curves`` / ``_evaluate`` are called directly. Every comparison is ``==`` (bit-identical):
the arithmetic is the same operation for operation. LaSOT has no Python toolkit: its MATLAB
toolkit's rules (``utils/calc_seq_err_robust.m``, ``utils/eval_tracker.m``) are transcribed below,
loop for loop, as an independent reading.

Cases: the first frame (a wrong prediction there), predictions out of the frame, zero overlap,
invalid ground truth (NaN rows, zero and negative sizes), exact predictions (a perfect track:
AUC 20/21), random boxes, several sequences of different lengths.
"""

import os

import matplotlib

matplotlib.use("Agg")  # got10k's report() plots with pyplot

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from spikedeploy.tracking import metrics as M  # noqa: E402

got10k_otb = pytest.importorskip("got10k.experiments.otb")
got10k_got = pytest.importorskip("got10k.experiments.got10k")
from got10k.utils.metrics import center_error as g_center_error, rect_iou as g_rect_iou  # noqa: E402

W, H = 320, 240  # image size of the generated sequences


class _Dataset:
    """What the experiments' report() reads from a dataset: ``len``, iteration over
    ``(img_files, anno[, meta])``, ``seq_names``, indexing by position or name, ``return_meta``."""

    def __init__(self, seqs, metas=None):
        self.seq_names = [name for name, _ in seqs]
        self._anno = {name: np.array(gt, dtype=np.float64) for name, gt in seqs}  # copies: got10k clips in place
        self._meta = metas or {}
        self.return_meta = False

    def __len__(self):
        return len(self.seq_names)

    def __getitem__(self, key):
        name = self.seq_names[key] if isinstance(key, int) else key
        files = [f"{name}/{i:08d}.jpg" for i in range(len(self._anno[name]))]
        if self.return_meta:
            return files, self._anno[name], self._meta[name]
        return files, self._anno[name]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savetxt(path, np.asarray(rows, dtype=np.float64), fmt="%.17g", delimiter=",")  # round-trips exactly


def _random_track(rng, n, noise=6.0):
    gt = np.column_stack([rng.uniform(0, W - 60, n), rng.uniform(0, H - 60, n),
                          rng.uniform(8, 60, n), rng.uniform(8, 60, n)])
    pred = gt + rng.normal(0, noise, size=gt.shape)
    pred[:, 2:] = np.abs(pred[:, 2:]) + 1
    return pred, gt


def _otb_cases():
    rng = np.random.default_rng(15)
    cases = {}
    p, g = _random_track(rng, 12)
    p[0] = [200, 200, 5, 5]  # the first frame: the toolkit replaces it by the ground truth
    cases["First"] = (p, g)
    p, g = _random_track(rng, 9)
    p[2:6] = [[-80, -50, 30, 30], [W + 10, 20, 40, 40], [-20, H - 5, 50, 60], [W - 10, H - 10, 90, 90]]
    cases["Outside"] = (p, g)
    p, g = _random_track(rng, 8)
    p[1:] = g[1:] + [[g[i, 2] + 1, 0, 0, 0] for i in range(1, 8)]  # right next to the target: IoU 0
    cases["Zero"] = (p, g)
    p, g = _random_track(rng, 10)
    g[2] = np.nan
    g[4, 2] = 0.0  # zero width
    g[6, 2:] = [-12.0, -7.0]  # negative size
    g[7, 3] = 0.0
    cases["Invalid"] = (p, g)
    _, g = _random_track(rng, 25)
    cases["Exact"] = (g.copy(), g)
    for n in (2, 7, 31, 100):
        cases[f"Random{n}"] = _random_track(rng, n, noise=rng.uniform(2, 30))
    return cases


def _otb_report(tmp_path, cases, tracker="spk"):
    exp = object.__new__(got10k_otb.ExperimentOTB)
    exp.dataset = _Dataset([(name, gt) for name, (_, gt) in cases.items()])
    exp.result_dir = str(tmp_path / "results" / "OTB")
    exp.report_dir = str(tmp_path / "reports" / "OTB")
    exp.nbins_iou, exp.nbins_ce = 21, 51
    for name, (pred, _) in cases.items():
        _write(os.path.join(exp.result_dir, tracker, f"{name}.txt"), pred)
    return exp, exp.report([tracker])[tracker]


def test_otb_report_equals_got10k_experiment_otb(tmp_path):
    """ExperimentOTB.report() on results files: per sequence and overall, every curve and number
    is identical, including the first-frame, out-of-frame, zero-overlap, invalid-ground-truth and
    exact-prediction sequences."""
    cases = _otb_cases()
    exp, perf = _otb_report(tmp_path, cases)
    ours = {name: M.score_sequence(p, g, "otb", name=name) for name, (p, g) in cases.items()}
    for name, s in ours.items():
        want = perf["seq_wise"][name]
        assert list(s.success) == want["success_curve"], name
        assert list(s.precision) == want["precision_curve"], name
        assert s.headline() == {"AUC": want["success_score"], "P@20": want["precision_score"],
                                "SR0.5": want["success_rate"]}, name
        assert s.frames == len(cases[name][1])  # every frame, the first included
    d = M.score_dataset(list(ours.values()), "otb")
    overall = perf["overall"]
    assert list(d.success) == overall["success_curve"] and list(d.precision) == overall["precision_curve"]
    assert d.headline() == {"AUC": overall["success_score"], "P@20": overall["precision_score"],
                            "SR0.5": overall["success_rate"]}
    assert d.sequences == len(cases) and d.frames == sum(len(g) for _, g in cases.values())
    # the cases do what they say
    assert ours["Exact"].headline()["AUC"] == 20 / 21 == perf["seq_wise"]["Exact"]["success_score"]
    first_gt = cases["First"][1][:1]
    assert ours["Zero"].iou[1:] == (0.0,) * 7 and ours["First"].iou[0] == M.box_iou(first_gt, first_gt)[0]
    assert np.isnan(ours["Invalid"].iou[2]) and ours["Invalid"].iou[4] == ours["Invalid"].iou[6] == 0.0
    assert (tmp_path / "reports" / "OTB" / "spk" / "performance.json").is_file()


def test_otb_per_frame_values_equal_got10k_calc_metrics_and_curves():
    """Per frame: IoU and center error equal _calc_metrics (rect_iou, center_error) bit for bit,
    NaN where the toolkit gives NaN, and the curves equal _calc_curves."""
    exp = object.__new__(got10k_otb.ExperimentOTB)
    exp.nbins_iou, exp.nbins_ce = 21, 51
    for name, (pred, gt) in _otb_cases().items():
        boxes = np.array(pred, dtype=np.float64)
        boxes[0] = gt[0]
        ious, errs = exp._calc_metrics(boxes, np.array(gt))
        s = M.score_sequence(pred, gt, "otb")
        assert np.array_equal(np.array(s.iou), ious, equal_nan=True), name
        assert np.array_equal(np.array(s.center_error), errs, equal_nan=True), name
        succ, prec = exp._calc_curves(ious, errs)
        assert list(s.success) == succ.tolist() and list(s.precision) == prec.tolist(), name
    # the module-level functions are the toolkit's too (random boxes, some degenerate)
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-20, 300, (500, 4)), rng.uniform(-20, 300, (500, 4))
    assert np.array_equal(M.box_iou(a, b), g_rect_iou(a.copy(), b.copy()))
    assert np.array_equal(M.center_error(a, b), g_center_error(a, b))
    assert np.array_equal(M.box_iou(a, b, image_size=(W, H)), g_rect_iou(a.copy(), b.copy(), bound=(W, H)))


def _got_cases():
    """(pred, gt, cover) per sequence; cover 0 = target absent."""
    rng = np.random.default_rng(10)
    cases = {}
    for name, n in (("GOT-10k_Val_000001", 2), ("GOT-10k_Val_000002", 15), ("GOT-10k_Val_000003", 40),
                    ("GOT-10k_Val_000004", 9)):
        p, g = _random_track(rng, n, noise=rng.uniform(2, 20))
        cover = rng.integers(0, 9, n)
        cover[0] = 8
        cases[name] = [p, g, cover]
    p, g, c = cases["GOT-10k_Val_000003"]
    p[3:8] = [[-80, -50, 100, 90], [W - 20, 10, 60, 40], [-30, H - 20, 50, 60], [W - 10, H - 10, 90, 90],
              [200, 200, 5, 5]]  # partly or wholly outside the image: clipped by the toolkit
    g[10, 2] = 0.0  # zero width
    g[11, 2:] = [-5.0, -9.0]  # negative size
    g[12, 0] = -15.0  # ground truth partly outside the image
    p, g, c = cases["GOT-10k_Val_000004"]
    p[:] = g  # exact prediction
    c[:] = 8
    return cases


def _got_report(tmp_path, cases, tracker="spk"):
    exp = object.__new__(got10k_got.ExperimentGOT10k)
    metas = {name: {"cover": np.array(c), "resolution": f"({W}, {H})"} for name, (_, _, c) in cases.items()}
    exp.dataset = _Dataset([(name, g) for name, (_, g, _) in cases.items()], metas)
    exp.subset = "val"
    exp.result_dir = str(tmp_path / "results" / "GOT-10k")
    exp.report_dir = str(tmp_path / "reports" / "GOT-10k")
    exp.nbins_iou, exp.repetitions = 101, 3
    for name, (p, g, _) in cases.items():
        _write(os.path.join(exp.result_dir, tracker, name, f"{name}_001.txt"), p)
        _write(os.path.join(exp.result_dir, tracker, name, f"{name}_time.txt"), np.full((len(g), 1), 0.01))
    return exp, exp.report([tracker])[tracker]


def test_got10k_report_equals_got10k_experiment_got10k(tmp_path):
    """ExperimentGOT10k.report() (val subset) on results files: per-sequence AO and SR, overall
    AO, SR0.5 and the 101-point success curve identical; SR0.75 equal to the toolkit's curve at
    0.75 and to the fraction of its IoUs above 0.75; the first frame and cover-0 frames excluded,
    boxes clipped to the image, frames pooled over sequences."""
    cases = _got_cases()
    exp, perf = _got_report(tmp_path, cases)
    ours = {name: M.score_sequence(p, g, "got10k", absent=(c == 0), image_size=(W, H), name=name)
            for name, (p, g, c) in cases.items()}
    all_ious = []
    for name, s in ours.items():
        p, g, c = cases[name]
        want = perf["seq_wise"][name]
        assert s.headline()["AO"] == want["ao"] and s.headline()["SR0.5"] == want["sr"], name
        ious = g_rect_iou(np.array(p[1:]), np.array(g[1:]), bound=(W, H))[c[1:] > 0]
        assert np.array_equal(np.array(s.iou), ious), name
        assert s.headline()["SR0.75"] == np.mean(ious > 0.75), name
        assert s.index == tuple(int(i) for i in np.flatnonzero(c > 0) if i > 0)
        all_ious.append(ious)
    d = M.score_dataset(list(ours.values()), "got10k")
    overall = perf["overall"]
    assert d.headline()["AO"] == overall["ao"] and d.headline()["SR0.5"] == overall["sr"]
    assert list(d.success) == overall["succ_curve"] and M.GOT10K_THRESHOLDS[75] == 0.75
    assert d.headline()["SR0.75"] == overall["succ_curve"][75] == np.mean(np.concatenate(all_ious) > 0.75)
    _, _, _, curve = exp._evaluate(np.concatenate(all_ious), np.zeros(0))
    assert list(d.success) == curve.tolist() and d.frames == sum(len(x) for x in all_ious)
    # the exact track: every IoU 1 up to the rounding of (x + w) - x in the intersection
    ROUNDING = 1e-14
    exact = ours["GOT-10k_Val_000004"].headline()
    assert exact["SR0.5"] == exact["SR0.75"] == 1.0 and exact["AO"] == pytest.approx(1.0, abs=ROUNDING)
    assert (tmp_path / "reports" / "GOT-10k" / "spk" / "performance.json").is_file()


def test_got10k_nan_ground_truth_is_excluded_like_an_absent_frame(tmp_path):
    """The toolkit's AO is NaN when a ground-truth row is NaN; ours leaves the frame out, which
    equals the toolkit with that frame labelled cover 0."""
    cases = _got_cases()
    name = "GOT-10k_Val_000002"
    p, g, c = cases[name]
    g[5] = np.nan
    ours = M.score_sequence(p, g, "got10k", absent=(c == 0), image_size=(W, H))
    c2 = c.copy()
    c2[5] = 0
    _, perf = _got_report(tmp_path, {name: [p, g, c2]})
    assert ours.headline()["AO"] == perf["seq_wise"][name]["ao"] and 5 not in ours.index
    assert np.isfinite(ours.headline()["AO"])


# ---------------------------------------------------------------------------------------------
# LaSOT: the MATLAB toolkit's rules, transcribed as written (independent of metrics.py)
# ---------------------------------------------------------------------------------------------

def _lasot_toolkit(results, rect_anno, absent_anno, norm_dst):
    """calc_seq_err_robust.m + the counting of eval_tracker.m for one sequence: returns the success
    and precision curves (``norm_dst``: normalized precision). The IoU is got10k's rect_iou (the
    toolkit's calc_rect_int is the same intersection in the +1/-1 pixel convention, unclipped; the
    protocol here clips, see metrics.py)."""
    results = np.array(results, dtype=np.float64)
    rect_anno = np.array(rect_anno, dtype=np.float64)
    seq_length = len(rect_anno)
    for i in range(1, seq_length):  # MATLAB's i = 2:seq_length
        r, r_anno = results[i], rect_anno[i]
        if (np.isnan(r).sum() > 0 or r[2] <= 0 or r[3] <= 0) and np.all(~np.isnan(r_anno)):
            results[i] = results[i - 1]
    rect_mat = results.copy()
    rect_mat[0] = rect_anno[0]
    keep = np.asarray(absent_anno) != 1
    rect_mat, anno = rect_mat[keep], rect_anno[keep]
    center_gt = np.column_stack([anno[:, 0] + (anno[:, 2] - 1) / 2, anno[:, 1] + (anno[:, 3] - 1) / 2])
    center = np.column_stack([rect_mat[:, 0] + (rect_mat[:, 2] - 1) / 2, rect_mat[:, 1] + (rect_mat[:, 3] - 1) / 2])
    if norm_dst:
        with np.errstate(invalid="ignore", divide="ignore"):
            center[:, 0] = center[:, 0] / anno[:, 2]
            center[:, 1] = center[:, 1] / anno[:, 3]
            center_gt[:, 0] = center_gt[:, 0] / anno[:, 2]
            center_gt[:, 1] = center_gt[:, 1] / anno[:, 3]
    err_center = np.sqrt(np.sum((center - center_gt) ** 2, axis=1))
    with np.errstate(invalid="ignore"):
        idx = (anno > 0).sum(axis=1) == 4
    err_coverage = -np.ones(len(idx))
    err_coverage[idx] = g_rect_iou(rect_mat[idx], anno[idx])
    err_center[~idx] = -1
    thr_overlap = np.linspace(0, 1, 21)
    thr_error = np.arange(0, 51) / 100 if norm_dst else np.arange(0, 51)
    len_all = seq_length
    eps = np.finfo(float).eps
    succ = np.array([np.sum(err_coverage > t) for t in thr_overlap]) / (len_all + eps)
    prec = np.array([np.sum(err_center <= t) for t in thr_error]) / (len_all + eps)
    return succ, prec


def _lasot_cases():
    rng = np.random.default_rng(7)
    cases = {}
    for k, n in enumerate((2, 11, 30, 64)):
        p, g = _random_track(rng, n, noise=rng.uniform(2, 25))
        g[:, :2] += 1  # LaSOT's annotations are 1-based: x, y >= 1
        absent = (rng.uniform(size=n) < 0.2).astype(int)
        absent[0] = 0
        g[absent == 1] = 0  # LaSOT writes 0,0,0,0 where the target is absent
        cases[f"cat-{k + 1}"] = [p, g, absent]
    p, g, a = cases["cat-3"]
    p[0] = [300, 1, 4, 4]  # the first frame
    p[4] = np.nan  # invalid predictions: the previous frame's box is used
    p[5, 2] = 0.0
    p[6, 3] = -3.0
    a[7:9] = 0
    g[7] = [0.0, 20.0, 30.0, 30.0]  # a present frame with an invalid row (x = 0): marked -1
    g[8] = np.nan
    p[9:12] = [[-50, -50, 20, 20], [W + 30, 5, 20, 20], [1, 1, 1, 1]]  # out of the frame
    p, g, a = cases["cat-4"]
    p[:] = g  # exact prediction (absent frames included: they fail anyway)
    return cases


def test_lasot_equals_the_toolkits_rules_transcribed():
    """Success, precision and normalized-precision curves per sequence and sequence-averaged equal
    the transcription of the LaSOT toolkit: absent frames fail and stay in the denominator, invalid
    predictions take the previous box, invalid present ground truth is marked -1."""
    cases = _lasot_cases()
    ours, want = [], []
    for name, (p, g, a) in cases.items():
        s = M.score_sequence(p, g, "lasot", absent=a, name=name)
        succ, prec = _lasot_toolkit(p, g, a, norm_dst=False)
        _, nprec = _lasot_toolkit(p, g, a, norm_dst=True)
        assert list(s.success) == succ.tolist(), name
        assert list(s.precision) == prec.tolist(), name
        assert list(s.normalized_precision) == nprec.tolist(), name
        assert s.headline()["NP"] == np.mean(nprec) and s.headline()["AUC"] == np.mean(succ)
        assert s.frames == len(g) and s.absent == int(np.sum(a))
        ours.append(s)
        want.append((succ, prec, nprec))
    d = M.score_dataset(ours, "lasot")
    for got, k in ((d.success, 0), (d.precision, 1), (d.normalized_precision, 2)):
        assert list(got) == np.mean(np.stack([w[k] for w in want]), axis=0).tolist()
    h = d.headline()
    assert list(h) == ["AUC", "P@20", "NP", "SR0.5"]
    assert h["P@20"] == d.precision[20] and h["SR0.5"] == d.success[10] and h["NP"] == np.mean(d.normalized_precision)
    # the exact track scores 20/21 of its present frames' share
    exact = next(s for s in ours if s.name == "cat-4")
    present = 1 - cases["cat-4"][2].mean()
    assert exact.headline()["AUC"] == pytest.approx(present * 20 / 21, abs=1e-15)  # mean of 21 count/n values
