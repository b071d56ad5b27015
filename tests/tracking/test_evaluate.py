"""spikedeploy evaluate / score: a generated benchmark tracked per (sequence, target) task,
results in the toolkit layout, resumable after SIGKILL, Ray (local and a two-node cluster)
identical to the in-process run, failing sequences reported, bad folders refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spikedeploy.errors import ConfigError, OutputPathError
from spikedeploy.tracking import benchmark as B
from spikedeploy.tracking import datasets as DS

FRAMES = 8


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """3 generated held-out sequences of 8 frames, lossless frames (the in-memory sequences exactly)."""
    root = tmp_path_factory.mktemp("bench") / "synth-otb"
    DS.make_dataset(root, count=3, num_frames=FRAMES, image_format="png")
    return root


@pytest.fixture(scope="module")
def torch_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "torch"
    rep = B.evaluate(bench, targets=["torch"], output=out, workers=1)
    return out, rep


def _records(out: Path) -> dict:
    return {str(f.relative_to(out)): json.loads(f.read_text())["boxes"] for f in sorted((out / "records").glob("*/*.json"))}


def test_evaluate_writes_results_records_and_scores_equal_to_the_heldout_evaluation(bench, torch_run):
    from spikedeploy.models.spiketrack import bundled_model
    from spikedeploy.tracking.evaluation import evaluate_model, heldout_sequences

    out, rep = torch_run
    tr = B.tracker_name("spiketrack-tiny128-t1", "torch")
    assert rep.passed and rep.protocol == "otb" and rep.tracked[tr] == list(DS.read_dataset(bench).names)
    for name in rep.sequences:
        boxes, times = DS.read_sequence_results(out / "results", tr, name, "otb")
        assert boxes.shape == (FRAMES, 4) and times is not None and len(times) == FRAMES
    for f in ("report.md", "report.json", "report.html", "success.png", "precision.png", B.CONFIG_FILE):
        assert (out / f).is_file(), f
    assert "protocol: **otb**" in (out / "report.md").read_text().lower()
    # the same sequences through the held-out evaluation (in memory, no files): the same boxes and scores
    ref = evaluate_model(bundled_model(), heldout_sequences(3, FRAMES))
    for name, boxes in zip(rep.sequences, ref["boxes"]):
        got, _ = DS.read_sequence_results(out / "results", tr, name, "otb")
        np.testing.assert_array_equal(got, np.asarray(boxes, dtype=np.float64))
    assert rep.scores[tr]["headline"]["AUC"] == ref["tracker"].auc
    assert rep.scores[tr]["frames"] == 3 * FRAMES


def test_score_of_the_results_folder_equals_evaluate(bench, torch_run, tmp_path):
    out, rep = torch_run
    again = B.score_results(out / "results", bench, output=tmp_path / "score")
    tr = B.tracker_name("spiketrack-tiny128-t1", "torch")
    assert again.scores[tr]["headline"] == rep.scores[tr]["headline"]
    assert again.per_sequence[tr] == rep.per_sequence[tr]
    assert (tmp_path / "score" / "report.html").is_file()


def test_rerun_resumes_and_another_configuration_is_refused(bench, torch_run, tmp_path):
    out, rep = torch_run
    before = {f: f.stat().st_mtime_ns for f in (out / "records").glob("*/*.json")}
    again = B.evaluate(bench, targets=["torch"], output=out, workers=1)
    assert {f: f.stat().st_mtime_ns for f in (out / "records").glob("*/*.json")} == before  # nothing re-tracked
    assert any("3 finished before" in n for n in again.notes)
    assert again.scores == rep.scores
    with pytest.raises(OutputPathError, match="another configuration"):
        B.evaluate(bench, targets=["torch"], output=out, preset="lasot", workers=1)
    with pytest.raises(ConfigError, match="max-sequences"):
        B.evaluate(bench, targets=["torch"], output=tmp_path / "x", max_sequences={"lava": 1})


def test_several_targets_spike_agreement_synops_and_common_sequences(bench, tmp_path):
    rep = B.evaluate(bench, targets=["torch", "reference-graded", "reference-binary", "reference-integer"],
                     output=tmp_path / "e", max_sequences={"reference-binary": 1, "reference-integer": 1}, workers=1)
    assert rep.passed
    sp = rep.spikes
    assert set(sp) == {"reference-graded", "reference-binary", "reference-integer"}
    # the integer graph's counts are what the binary lowering fires: the same SynOps on the same sequence
    assert sp["reference-integer"]["synops_per_frame"] == sp["reference-binary"]["synops_per_frame"] > 0
    assert sp["reference-graded"]["synops_per_frame"] > 0 and sp["reference-graded"]["energy_uj_per_frame"] > 0
    b = sp["reference-binary"]
    assert b["against"] == "reference-graded" and b["compared_frames"] == FRAMES - 1
    # graded and binary spikes are the same counts q: identical digests frame by frame
    assert b["identical_frames"] == b["compared_frames"]
    # different sequence sets: the report scores all of them on the sequence they share
    assert rep.common and all(c["sequences"] == rep.sequences[:1] for c in rep.common.values())
    assert len({json.dumps(c["headline"]) for c in rep.common.values()}) == 1  # identical boxes, identical scores
    md = (tmp_path / "e" / "report.md").read_text()
    assert "SynOps / frame" in md and "every tracker has" in md


def test_a_failing_sequence_is_reported_and_the_others_go_on(bench, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bench, broken)
    name = sorted(p.name for p in broken.iterdir() if p.is_dir())[1]
    frame = sorted((broken / name / "img").iterdir())[3]
    frame.write_bytes(b"not an image")
    out = tmp_path / "e"
    r = subprocess.run([sys.executable, "-m", "spikedeploy.cli", "evaluate", "--dataset", str(broken), "-o", str(out),
                        "--no-progress", "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "FAILED" in r.stdout
    rec = json.loads((out / "records" / "torch" / f"{name}.json").read_text())
    assert rec["status"] == "failed" and frame.name in rec["error"]
    rep = json.loads((out / "report.json").read_text())
    tr = B.tracker_name("spiketrack-tiny128-t1", "torch")
    assert len(rep["tracked"][tr]) == 2 and name in rep["failed"][tr]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spikedeploy.cli", "evaluate", "--dataset", str(tmp_path / "nowhere"),
                        "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nowhere" in r.stderr
    r = subprocess.run([sys.executable, "-m", "spikedeploy.cli", "evaluate", "--dataset", str(tmp_path),
                        "--workers", "0", "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--workers" in r.stderr


def test_sigkill_of_the_driver_loses_no_finished_sequence(tmp_path):
    """The driver is killed (SIGKILL) after its first finished sequence; the rerun tracks the rest
    and the records equal those of an uninterrupted run; no temporary file is left."""
    data = tmp_path / "data"
    DS.make_dataset(data, count=4, num_frames=24, image_format="png")
    whole = tmp_path / "whole"
    B.evaluate(data, targets=["torch"], output=whole, workers=1)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "spikedeploy.cli", "evaluate", "--dataset", str(data), "-o", str(out), "--no-progress", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "records").glob("*/*.json"))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the evaluation ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list((out / "records").glob("*/*.json"))
    assert 1 <= len(finished) < 4
    for f in finished:
        json.loads(f.read_text())  # complete JSON, never a partial file
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{len(finished)} finished before" in r.stdout
    assert _records(out) == _records(whole)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


@pytest.mark.slow
def test_ray_local_and_a_two_node_cluster_equal_the_in_process_run(bench, torch_run, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    local = B.evaluate(bench, targets=["torch"], output=tmp_path / "ray2", workers=2)
    assert _records(tmp_path / "ray2") == _records(torch_run[0]) and local.scores == torch_run[1].scores
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        rep = B.evaluate(bench, targets=["torch"], output=tmp_path / "cluster", address=cluster.address)
        workers = {json.loads(f.read_text())["worker"] for f in (tmp_path / "cluster" / "records").glob("*/*.json")}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert _records(tmp_path / "cluster") == _records(torch_run[0]) and rep.scores == torch_run[1].scores
    assert len(workers) == 2  # both nodes' workers tracked sequences


def _ray_task_pids() -> list:
    """PIDs of Ray workers executing an evaluation task (Ray sets their title to ray::_ray_task)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::_ray_task"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
def test_sigkill_of_a_ray_worker_fails_only_its_sequence_and_the_rerun_completes(tmp_path):
    data = tmp_path / "data"
    DS.make_dataset(data, count=4, num_frames=24, image_format="png")
    whole = tmp_path / "whole"
    B.evaluate(data, targets=["torch"], output=whole, workers=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spikedeploy.cli", "evaluate", "--dataset", str(data), "-o", str(out),
           "--no-progress", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and killed is None:
        pids = _ray_task_pids()
        if pids:
            time.sleep(0.3)  # inside the task, tracking
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "no Ray task was seen running"
    assert proc.returncode == 1, stderr  # a failed sequence: exit 1, the others finished
    recs = [json.loads(f.read_text()) for f in (out / "records").glob("*/*.json")]
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(recs) == 4 and len(failed) == 1 and "FAILED" in stdout
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _records(out) == _records(whole)


class _Stub:
    """The dataset interface got10k's ExperimentOTB.report reads (its constructor would want OTB100)."""

    def __init__(self, ds):
        self.ds = ds
        self.seq_names = list(ds.names)

    def __len__(self):
        return len(self.ds)

    def __iter__(self):
        return iter([(list(s.frame_paths), np.array(s.ground_truth)) for s in self.ds])


def test_got10k_experiments_read_the_results_folder_and_agree(bench, torch_run, tmp_path, capsys):
    """What evaluate writes is what got10k's experiment classes read, and they score it the same."""
    from got10k.experiments import ExperimentGOT10k, ExperimentOTB

    out, rep = torch_run
    tr = B.tracker_name("spiketrack-tiny128-t1", "torch")
    exp = ExperimentOTB.__new__(ExperimentOTB)
    exp.dataset = _Stub(DS.read_dataset(bench))
    exp.result_dir, exp.report_dir, exp.nbins_iou, exp.nbins_ce = str(out / "results"), str(tmp_path / "r"), 21, 51
    perf = exp.report([tr])[tr]["overall"]
    h = rep.scores[tr]["headline"]
    assert h["AUC"] == pytest.approx(perf["success_score"], abs=1e-12)  # mean of means: summation order only
    assert h["P@20"] == pytest.approx(perf["precision_score"], abs=1e-12)
    assert h["SR0.5"] == pytest.approx(perf["success_rate"], abs=1e-12)

    gdata = tmp_path / "GOT-10k" / "val"
    DS.make_dataset(gdata, format="got10k", count=2, num_frames=FRAMES)  # got10k reads *.jpg only
    grep = B.evaluate(gdata, targets=["torch"], output=tmp_path / "g", workers=1)
    gexp = ExperimentGOT10k(str(tmp_path / "GOT-10k"), subset="val", result_dir=str(tmp_path / "g" / "results"),
                            report_dir=str(tmp_path / "gr"))
    gexp.result_dir = str(tmp_path / "g" / "results")
    gperf = gexp.report([tr])[tr]["overall"]
    gh = grep.scores[tr]["headline"]
    assert grep.protocol == "got10k"
    assert gh["AO"] == pytest.approx(gperf["ao"], abs=1e-12) and gh["SR0.5"] == pytest.approx(gperf["sr"], abs=1e-12)
    capsys.readouterr()
