"""Benchmark-scale evaluation: ``spikedeploy evaluate`` and ``spikedeploy score``.

``evaluate`` tracks every sequence of a dataset in its official layout
(:mod:`spikedeploy.tracking.datasets`: OTB, LaSOT, GOT-10k) once per target, each (sequence,
target) pair one task, and scores the results with the dataset's protocol
(:mod:`spikedeploy.tracking.metrics`, the toolkits' definitions). The output folder holds:

- ``results/<tracker>/…`` — the boxes (and per-frame times) in the toolkit's own layout, one
  tracker folder per target (``<model>_<target>``), so the official toolkits score them;
- ``records/<target>/<sequence>.json`` — everything a task measured: boxes, per-frame seconds,
  per-frame spike digests and unit-spike totals, measured SynOps and energy per frame (targets
  that expose their spike counts: reference, Lava), or the error of a failed sequence;
- ``evaluation.json`` — the configuration (written first; a rerun with the same configuration
  resumes, skipping finished sequences), ``report.md``/``report.json``/``report.html`` and
  ``success.png``/``precision.png``.

Every file is written atomically (temporary file + rename) as soon as its task finishes, by the
driver: a SIGKILL of the driver or of a worker loses at most the tasks in flight and corrupts no
file. A sequence that fails (an exception in its task, a crashed worker) is recorded as failed for
that sequence and target; the others go on, and a rerun tries it again.

Scale-out: with ``workers > 1`` (or ``address``) the tasks run on Ray — an embedded local Ray
with ``workers`` CPUs (nothing to start), or the cluster at ``address``. Every task runs PyTorch
with one thread (``torch.set_num_threads(1)``), also in-process, so a result does not depend on
where it ran. ``score`` scores existing results files (anyone's) with the same code and report.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from spikedeploy.errors import ConfigError, InputError, OutputPathError

__all__ = [
    "EvaluationConfig", "SequenceRecord", "EvaluationReport", "evaluate", "score_results", "run_task",
    "EXECUTORS", "CONFIG_FILE",
]

CONFIG_FILE = "evaluation.json"  #: the configuration of an evaluation folder (resume key)
RECORDS = "records"
RESULTS = "results"


# ---------------------------------------------------------------------------------------------
# configuration and records
# ---------------------------------------------------------------------------------------------


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class EvaluationConfig:
    """What determines an evaluation's results (its fingerprint is the resume key): the model and
    its weights (a checkpoint file by content), the tracker preset, the fixed-point weight width,
    the Lava placement and the dataset (root and format). The targets are not part of it: a rerun
    may add targets to a folder."""

    model: str
    checkpoint: Optional[str]
    checkpoint_sha256: Optional[str]
    seed: int
    preset: str
    weight_bits: int
    partitions: Optional[str]
    dataset: str
    format: str

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def tracker_name(model: str, target: str) -> str:
    """The results folder of ``target``: ``<model>_<target>`` (a toolkit's tracker name)."""
    return f"{model}_{target}"


@dataclass(frozen=True)
class SequenceRecord:
    """One task's outcome: ``sequence`` tracked by ``target``. ``status`` "ok" with ``boxes`` (one
    ``[x, y, w, h]`` per frame, the first the initial box) and ``times`` (seconds per frame; the
    first is the initialization), per-frame ``spike_digest``/``unit_spikes`` and measured
    ``synops``/``energy_pj`` (None for the first frame and for targets that expose no spike
    counts); or "failed" with ``error`` (one line)."""

    sequence: str
    target: str
    status: str
    boxes: List[List[float]] = field(default_factory=list)
    times: List[float] = field(default_factory=list)
    spike_digest: List[Optional[str]] = field(default_factory=list)
    unit_spikes: List[Optional[int]] = field(default_factory=list)
    synops: List[Optional[float]] = field(default_factory=list)
    energy_pj: List[Optional[float]] = field(default_factory=list)
    error: str = ""
    worker: str = ""
    setup_seconds: float = 0.0  #: building the network in this task (0 when the worker had it already)
    load_seconds: float = 0.0  #: reading the frames
    started: float = 0.0  #: wall-clock time (epoch seconds) the task began and ended, for timelines
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def has_spikes(self) -> bool:
        return any(d is not None for d in self.spike_digest)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping, source: str = "record") -> "SequenceRecord":
        try:
            rec = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as e:
            raise InputError(f"{source}: not an evaluation record ({e})") from None
        if rec.status not in ("ok", "failed") or (rec.ok and not rec.boxes):
            raise InputError(f"{source}: not a complete evaluation record (status {rec.status!r})")
        return rec


# ---------------------------------------------------------------------------------------------
# the task: one sequence on one target (runs in a Ray worker or in-process)
# ---------------------------------------------------------------------------------------------

#: per-process cache: (config fingerprint, target) -> (network, fan-out cache); fingerprint -> (model, factory)
_NETWORKS: Dict[Tuple[str, str], tuple] = {}
_MODELS: Dict[str, tuple] = {}


def _network(config: EvaluationConfig, target: str):
    """``target``'s network for ``config``'s model, built once per process (the model loaded once,
    the graph targets sharing one capture and one quantization: :class:`~spikedeploy.tracking.run.NetworkFactory`)."""
    from spikedeploy.tracking.run import NetworkFactory, load_tracker_model

    key = (config.fingerprint(), target)
    if key in _NETWORKS:
        return _NETWORKS[key][0]
    if config.fingerprint() not in _MODELS:
        net, _ = load_tracker_model(config.model, config.checkpoint, seed=config.seed)
        _MODELS.clear()  # one model per process at a time
        _NETWORKS.clear()
        lava = {"partitions": config.partitions} if config.partitions else None
        _MODELS[config.fingerprint()] = (net, NetworkFactory(lava_options=lava,
                                                             fixed_options={"weight_bits": config.weight_bits}))
    net, factory = _MODELS[config.fingerprint()]
    _NETWORKS[key] = (factory(net, target), {})
    return _NETWORKS[key][0]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:500]


def run_task(config: EvaluationConfig, sequence, target: str, *, threads: int = 1) -> SequenceRecord:
    """Track ``sequence`` (a :class:`~spikedeploy.tracking.datasets.TrackingSequence`) with
    ``target`` and measure it. Never raises for a failure of the sequence (it is the record's
    ``error``); KeyboardInterrupt and SystemExit pass."""
    import socket

    import torch

    from spikedeploy.audit import audit_graph
    from spikedeploy.reference import graph_mode
    from spikedeploy.tracking.run import _digest, _last_spikes
    from spikedeploy.tracking.tracker import SpikeTrackTracker

    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = time.time()
    network = None
    try:
        if getattr(sequence, "kind", "frames") == "events":  # an event sequence: the event tracker's task
            from spikedeploy.tracking.event_run import event_task

            return SequenceRecord(sequence.name, target, "ok", **event_task(config, sequence, target), worker=worker,
                                  started=started, finished=time.time())
        t0 = time.perf_counter()
        frames = sequence.load_frames()
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        network = _network(config, target)
        t_setup = time.perf_counter() - t0
        fan = _NETWORKS[(config.fingerprint(), target)][1]
        tracker = SpikeTrackTracker(network, preset=config.preset)
        t0 = time.perf_counter()
        tracker.initialize(frames[0], [float(v) for v in sequence.init_box])
        times = [time.perf_counter() - t0]
        boxes = [[float(v) for v in tracker.state]]
        digests: List[Optional[str]] = [None]
        units: List[Optional[int]] = [None]
        synops: List[Optional[float]] = [None]
        energy: List[Optional[float]] = [None]
        for i in range(1, len(frames)):
            t0 = time.perf_counter()
            result = tracker.track(frames[i])
            times.append(time.perf_counter() - t0)
            boxes.append([float(v) for v in result.box])
            spikes = _last_spikes(network)
            if spikes is None:
                digests.append(None), units.append(None), synops.append(None), energy.append(None)
                continue
            d, n = _digest(spikes)
            digests.append(d)
            units.append(int(n))
            graph = getattr(network, "search_graph", None)
            mode = graph_mode(graph)  # an integer graph's counts q are what its binary lowering fires
            aud = audit_graph(graph, spike_counts=spikes, encoding="binary" if mode == "integer" else mode,
                              runtime="reference", fanout_cache=fan)
            synops.append(float(aud.totals["per_frame"]["measured_synops"]))
            energy.append(float(aud.totals["per_frame"]["energy_pj"]))
        return SequenceRecord(sequence.name, target, "ok", boxes, times, digests, units, synops, energy, worker=worker,
                              setup_seconds=t_setup, load_seconds=t_load, started=started, finished=time.time())
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - a failing sequence is reported, the others go on
        return SequenceRecord(sequence.name, target, "failed", error=_one_line(e), worker=worker, started=started,
                              finished=time.time())
    finally:
        close = getattr(network, "close", None)
        if close is not None:
            close()
        torch.set_num_threads(old_threads)


# ---------------------------------------------------------------------------------------------
# executors: in-process or Ray
# ---------------------------------------------------------------------------------------------


class LocalExecutor:
    """The tasks one after the other in this process."""

    name = "local"

    def __init__(self, workers: int = 1, address: Optional[str] = None):
        self.workers = 1

    def run(self, config, tasks) -> Iterator[SequenceRecord]:
        for seq, target in tasks:
            yield run_task(config, seq, target)

    def close(self) -> None:
        pass


def _ray_task(config, sequence, target):  # the remote function's body (module level: importable by workers)
    return run_task(config, sequence, target)


def warm_worker() -> None:
    """Ray's worker set-up hook: import what every task needs (torch, the tracker, the backends,
    the audit) while the driver is still preparing, not when the first task arrives."""
    import torch  # noqa: F401

    import spikedeploy.audit  # noqa: F401
    import spikedeploy.tracking.backends  # noqa: F401
    import spikedeploy.tracking.tracker  # noqa: F401


class RayExecutor:
    """The tasks as Ray tasks (one CPU each): an embedded local Ray with ``workers`` CPUs, or the
    cluster at ``address``. A task whose worker dies is recorded as failed."""

    name = "ray"

    def __init__(self, workers: int = 2, address: Optional[str] = None):
        try:
            import ray
        except ImportError as e:
            raise ConfigError(f"--workers {workers} / --address need Ray ({e}); install spikedeploy[scale] "
                              "or evaluate with --workers 1") from None
        self.ray = ray
        self._own = not ray.is_initialized()
        if self._own:
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                      configure_logging=True,
                      runtime_env={"worker_process_setup_hook": "spikedeploy.tracking.benchmark.warm_worker"})
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=int(workers), **kw)
        self.workers = int(ray.cluster_resources().get("CPU", workers))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)

    def run(self, config, tasks) -> Iterator[SequenceRecord]:
        ray = self.ray
        pending = {}
        for seq, target in tasks:
            pending[self._remote.remote(config, seq, target)] = (seq.name, target)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                name, target = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 - a crashed worker fails its sequence only
                    yield SequenceRecord(name, target, "failed", error=_one_line(e).splitlines()[0])

    def close(self) -> None:
        if self._own:
            self.ray.shutdown()


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


# ---------------------------------------------------------------------------------------------
# the output folder
# ---------------------------------------------------------------------------------------------


def _write_json(path: Path, data) -> None:
    from spikedeploy.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _record_path(out: Path, target: str, sequence: str) -> Path:
    return out / RECORDS / target / f"{sequence}.json"


def _open_folder(out: Path, config: EvaluationConfig, *, overwrite: bool, inputs) -> Dict[Tuple[str, str], SequenceRecord]:
    """Prepare ``out``: a new folder, the same evaluation to resume (its finished records are
    returned), or, with ``overwrite``, a folder to start again. Anything else is refused."""
    import shutil

    from spikedeploy.fsutil import check_output_dir

    cfg_file = out / CONFIG_FILE
    done: Dict[Tuple[str, str], SequenceRecord] = {}
    if out.is_dir() and cfg_file.is_file() and not overwrite:
        try:
            old = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OutputPathError(f"{cfg_file}: unreadable ({e}); pass --overwrite to start the evaluation again") from None
        if old.get("fingerprint") != config.fingerprint():
            diff = [k for k, v in asdict(config).items() if (old.get("config") or {}).get(k) != v]
            raise OutputPathError(
                f"{out} holds an evaluation of another configuration (differs in: {', '.join(diff) or 'version'}); "
                "choose another -o, or pass --overwrite to replace it")
        for sub in (RECORDS, RESULTS):  # temporary files of writes a SIGKILL interrupted (ours: .<name>.*.tmp)
            for f in (out / sub).rglob(".*.tmp") if (out / sub).is_dir() else ():
                f.unlink()
        for f in sorted((out / RECORDS).glob("*/*.json")):
            try:
                rec = SequenceRecord.from_json(json.loads(f.read_text(encoding="utf-8")), str(f))
            except (ValueError, InputError):
                continue  # unreadable: the task runs again and replaces it
            if rec.ok:
                done[(rec.sequence, rec.target)] = rec
        return done
    check_output_dir(out, overwrite=overwrite, inputs=inputs)
    if out.is_dir() and overwrite:
        for sub in (RECORDS, RESULTS):
            if (out / sub).exists():
                shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(cfg_file, {"fingerprint": config.fingerprint(), "config": asdict(config)})
    return done


# ---------------------------------------------------------------------------------------------
# scores and the report
# ---------------------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """The scores of one or several trackers (targets) on a dataset."""

    title: str
    dataset: str
    format: str
    protocol: str
    protocol_title: str
    sequences: List[str]
    trackers: List[str]
    scores: Dict[str, dict] = field(default_factory=dict)  #: tracker -> DatasetScore.to_dict() + headline
    per_sequence: Dict[str, Dict[str, dict]] = field(default_factory=dict)  #: tracker -> seq -> headline
    attributes: Dict[str, Dict[str, dict]] = field(default_factory=dict)  #: tracker -> attribute -> headline
    fps: Dict[str, Optional[float]] = field(default_factory=dict)
    tracked: Dict[str, List[str]] = field(default_factory=dict)  #: tracker -> sequences with results
    failed: Dict[str, Dict[str, str]] = field(default_factory=dict)  #: tracker -> seq -> error
    common: Dict[str, dict] = field(default_factory=dict)  #: scores over the sequences all trackers have
    spikes: Dict[str, dict] = field(default_factory=dict)  #: target -> spike agreement / SynOps summary
    boxes: Dict[str, dict] = field(default_factory=dict)  #: target -> box agreement with the first target
    notes: List[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    labels: Dict[str, str] = field(default_factory=dict)  #: tracker -> its name in tables (the target)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No failed sequence, and every pair of targets that both count spikes agreed exactly."""
        agree = all(v.get("identical_frames") == v.get("compared_frames") for v in self.spikes.values()
                    if v.get("compared_frames"))
        return not any(self.failed.values()) and agree

    def to_json(self) -> dict:
        return asdict(self)


def _headline_text(h: Mapping[str, float], frames: int) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in h.items()) + f" ({frames} frames)"


def _image_size(seq) -> Tuple[float, float]:
    """(width, height) of a sequence's frames: GOT-10k's ``meta_info.ini`` resolution, else the
    first frame's header."""
    import ast

    res = (seq.meta or {}).get("resolution")
    if res:
        try:
            w, h = ast.literal_eval(str(res))
            return float(w), float(h)
        except (ValueError, SyntaxError, TypeError):
            raise InputError(f"sequence {seq.name}: meta_info.ini resolution {res!r} is not (width, height)") from None
    h, w = seq.image_size()
    return float(w), float(h)


def _score_trackers(dataset, results: Mapping[str, Mapping[str, np.ndarray]], protocol_name: str):
    """Scores of every tracker: ``results[tracker][sequence] = boxes``. Returns (per tracker
    dataset score dicts, per-sequence headlines, per-attribute headlines, common-subset scores)."""
    from spikedeploy.tracking import metrics as M

    proto = M.get_protocol(protocol_name)
    scores, per_seq, per_attr, seq_scores = {}, {}, {}, {}
    for tr, by_seq in results.items():
        ss = {}
        for name, boxes in by_seq.items():
            seq = dataset[name]
            ss[name] = M.score_sequence(np.asarray(boxes, dtype=np.float64), seq.ground_truth, proto,
                                        absent=seq.absent if proto.absent != "refused" else None,
                                        image_size=_image_size(seq) if proto.clip_to_image else None, name=name)
        seq_scores[tr] = ss
        if not ss:
            continue
        total = M.score_dataset([ss[n] for n in dataset.names if n in ss], proto)
        scores[tr] = dict(total.to_dict(), headline=total.headline())
        per_seq[tr] = {n: dict(s.headline(), frames=int(s.frames)) for n, s in ss.items()}
        attrs: Dict[str, list] = {}
        for n, s in ss.items():
            for a in dataset[n].attributes:
                attrs.setdefault(a, []).append(s)
        per_attr[tr] = {a: dict(M.score_dataset(v, proto).headline(), sequences=len(v),
                                frames=int(sum(x.frames for x in v))) for a, v in sorted(attrs.items())}
    common = {}
    have = [set(v) for v in seq_scores.values() if v]
    if len(have) > 1 and len(set(map(frozenset, have))) > 1:
        shared = sorted(set.intersection(*have), key=dataset.names.index)
        if shared:
            for tr, ss in seq_scores.items():
                total = M.score_dataset([ss[n] for n in shared], proto)
                common[tr] = dict(headline=total.headline(), frames=int(total.frames), sequences=shared)
    return proto, scores, per_seq, per_attr, common


def _spike_summary(records: Mapping[str, Mapping[str, SequenceRecord]]) -> Dict[str, dict]:
    """Per target that counts spikes: SynOps and energy per frame over its sequences, and its
    per-frame agreement with the first such target (per sequence and in total)."""
    spiking = [t for t, recs in records.items() if any(r.has_spikes for r in recs.values())]
    out = {}
    first = spiking[0] if spiking else None
    for t in spiking:
        recs = records[t]
        syn = [v for r in recs.values() for v in r.synops if v is not None]
        en = [v for r in recs.values() for v in r.energy_pj if v is not None]
        d = {"synops_per_frame": float(np.mean(syn)) if syn else None,
             "energy_uj_per_frame": float(np.mean(en)) * 1e-6 if en else None, "frames": len(syn),
             "against": first if t != first else None, "per_sequence": {}}
        if t != first:
            compared = identical = 0
            for name, r in recs.items():
                ref = records[first].get(name)
                if ref is None:
                    continue
                pairs = [(a, b) for a, b in zip(ref.spike_digest, r.spike_digest) if a is not None and b is not None]
                same = sum(a == b for a, b in pairs)
                d["per_sequence"][name] = {"compared": len(pairs), "identical": same}
                compared += len(pairs)
                identical += same
            d["compared_frames"], d["identical_frames"] = compared, identical
        out[t] = d
    return out


def _box_summary(records: Mapping[str, Mapping[str, SequenceRecord]]) -> Dict[str, dict]:
    """Every target's boxes against the first target's, frame by frame, on the sequences both
    tracked: identical frames, compared frames, the smallest IoU."""
    from spikedeploy.tracking.metrics import box_iou

    targets = list(records)
    if len(targets) < 2:
        return {}
    first, out = targets[0], {}
    for t in targets[1:]:
        compared = identical = 0
        min_iou = 1.0
        for name, r in records[t].items():
            ref = records[first].get(name)
            if ref is None:
                continue
            a, b = np.asarray(ref.boxes[1:], dtype=np.float64), np.asarray(r.boxes[1:], dtype=np.float64)
            compared += len(a)
            identical += int((a == b).all(axis=1).sum())
            if len(a):
                min_iou = min(min_iou, float(box_iou(b, a).min()))
        out[t] = {"against": first, "compared_frames": compared, "identical_frames": identical, "min_iou": min_iou}
    return out


def _shown_path(root, output) -> str:
    """The dataset as a report names it: relative to the report's folder when both share a parent
    folder (a dataset beside or inside the output: the name stays right when the folders move
    together), else absolute."""
    root = Path(root).resolve()
    if output is not None:
        out = Path(output).resolve()
        if out.parent == root or out.parent in root.parents:
            return os.path.relpath(root, out)
    return str(root)


def build_report(title: str, dataset, results, *, protocol: Optional[str] = None, times=None, failed=None,
                 records=None, config=None, notes=(), seconds: float = 0.0,
                 labels: Optional[Mapping[str, str]] = None, output=None) -> EvaluationReport:
    """The report of ``results[tracker][sequence] = boxes`` on ``dataset``; ``times[tracker][seq]``
    (seconds per frame, the first the initialization) gives fps; ``records`` (target -> seq ->
    :class:`SequenceRecord`) the spike agreement and SynOps."""
    proto_name = protocol or dataset.format
    scorable = {tr: {n: b for n, b in by.items() if len(dataset[n].ground_truth) > 1} for tr, by in results.items()}
    proto, scores, per_seq, per_attr, common = _score_trackers(dataset, scorable, proto_name)
    fps = {}
    for tr in results:
        ts = [t for seq_t in (times or {}).get(tr, {}).values() if seq_t is not None for t in list(seq_t)[1:]]
        fps[tr] = float(len(ts) / sum(ts)) if ts and sum(ts) > 0 else None
    rep = EvaluationReport(
        title=title, dataset=_shown_path(dataset.root, output), format=dataset.format, protocol=proto.name,
        protocol_title=proto.title, sequences=list(dataset.names), trackers=list(results),
        scores=scores, per_sequence=per_seq, attributes=per_attr, fps=fps,
        tracked={tr: [n for n in dataset.names if n in by] for tr, by in results.items()},
        failed={tr: dict((failed or {}).get(tr, {})) for tr in results}, common=common,
        spikes=_spike_summary(records) if records else {}, boxes=_box_summary(records) if records else {},
        notes=list(notes), labels=dict(labels or {}), config=dict(config or {}),
        seconds=float(seconds))
    unscored = [n for n in dataset.names if len(dataset[n].ground_truth) <= 1]
    if unscored:
        rep.notes.append(f"{len(unscored)} sequences have ground truth for the first frame only (a test split): "
                         "their results are written for the official server and not scored here")
    return rep


def _table(headers: Sequence[str], rows: Iterable[Sequence]) -> List[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _f(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _label(rep: EvaluationReport, tracker: str) -> str:
    """A tracker's name in tables and legends: the target for evaluate's own folders
    (``<model>_<target>``), else the folder name."""
    return rep.labels.get(tracker, tracker)


def _sections(rep: EvaluationReport) -> List[str]:
    """The report as Markdown sections: [head and scores, the rest]; the plots go between."""
    L = lambda tr: _label(rep, tr)  # noqa: E731
    head = [f"# {rep.title} — {'SUCCESS' if rep.passed else 'FAIL'}", "",
            f"Dataset `{rep.dataset}` ({rep.format} layout, {len(rep.sequences)} sequences). "
            f"Protocol: **{rep.protocol}** — {rep.protocol_title}", ""]
    if rep.scores:
        names = list(next(iter(rep.scores.values()))["headline"])
        rows = []
        for tr in rep.trackers:
            s = rep.scores.get(tr)
            h = s["headline"] if s else {}
            rows.append([L(tr)] + [_f(h.get(k)) for k in names]
                        + [f"{len(rep.tracked.get(tr, []))}/{len(rep.sequences)}", s["frames"] if s else 0,
                           _f(rep.fps.get(tr), 2), len(rep.failed.get(tr, {}))])
        head += ["## Scores", "", "Each score is over the frames given beside it (the protocol's rule: "
                 f"{get_protocol_rule(rep.protocol)}); fps: tracked frames per second of tracking time.", ""]
        head += _table(["tracker"] + names + ["sequences", "frames scored", "fps", "failed"], rows) + [""]
    if rep.common:
        shared = next(iter(rep.common.values()))["sequences"]
        names = list(next(iter(rep.common.values()))["headline"])
        head += [f"## Scores on the {len(shared)} sequences every tracker has", "",
                 "The trackers above cover different sequences; these rows compare them on the same frames.", ""]
        head += _table(["tracker"] + names + ["frames scored"],
                       [[L(tr)] + [_f(c["headline"].get(k)) for k in names] + [c["frames"]] for tr, c in rep.common.items()])
        head.append("")
    lines: List[str] = []
    if rep.spikes:
        lines += ["## Spikes: measured SynOps and agreement", "",
                  "Measured synaptic operations per tracked frame of the search branch (spike counts of the run × "
                  "real fan-out, `spikedeploy audit`'s definition) and energy at the 45 nm profile; targets that "
                  "count spikes compared frame by frame (SHA-256 of every layer's exact counts).", ""]
        rows = []
        for t, d in rep.spikes.items():
            agree = "— (reference point)" if d.get("against") is None else (
                f"{d.get('identical_frames', 0)}/{d.get('compared_frames', 0)} frames identical to {d['against']}")
            rows.append([t, f"{d['synops_per_frame']:,.0f}" if d["synops_per_frame"] is not None else "—",
                         _f(d["energy_uj_per_frame"], 2), d["frames"], agree])
        lines += _table(["target", "SynOps / frame", "energy µJ / frame", "frames", "spike agreement"], rows) + [""]
    if rep.boxes:
        lines += ["## Boxes: agreement between targets", "",
                  "Every target's boxes against the first target's on the frames both tracked (the initial box "
                  "left out).", ""]
        lines += _table(["target", "against", "identical frames", "smallest IoU"],
                        [[t, d["against"], f"{d['identical_frames']}/{d['compared_frames']}", f"{d['min_iou']:.6f}"]
                         for t, d in rep.boxes.items()]) + [""]
    key = next(iter(next(iter(rep.scores.values()))["headline"])) if rep.scores else None
    attrs = sorted({a for v in rep.attributes.values() for a in v})
    if attrs and key:
        lines += [f"## Per attribute ({key})", ""]
        rows = []
        for a in attrs:
            some = next((v[a] for v in rep.attributes.values() if a in v), {})
            rows.append([a, some.get("sequences", 0)] + [_f(rep.attributes.get(tr, {}).get(a, {}).get(key))
                                                          for tr in rep.scores])
        lines += _table(["attribute", "sequences"] + [L(tr) for tr in rep.scores], rows) + [""]
    if rep.per_sequence and key:
        trs = list(rep.per_sequence)
        lines += [f"## Per sequence ({key})", ""]
        rows = []
        spk = {t: d for t, d in rep.spikes.items() if d.get("against")}
        for n in rep.sequences:
            row = [n, next((v[n]["frames"] for v in rep.per_sequence.values() if n in v), "—")]
            row += [_f(rep.per_sequence[tr].get(n, {}).get(key)) if n in rep.per_sequence[tr]
                    else ("failed" if n in rep.failed.get(tr, {}) else "—") for tr in trs]
            for t, d in spk.items():
                p = d["per_sequence"].get(n)
                row.append(f"{p['identical']}/{p['compared']}" if p else "—")
            rows.append(row)
        lines += _table(["sequence", "frames"] + [L(tr) for tr in trs]
                        + [f"spikes {t} = {d['against']}" for t, d in spk.items()], rows) + [""]
    fails = [(L(tr), n, e) for tr, v in rep.failed.items() for n, e in v.items()]
    if fails:
        lines += ["## Failed sequences", "", "A rerun of the same command tries them again.", ""]
        lines += _table(["tracker", "sequence", "error"], fails) + [""]
    if rep.notes or rep.seconds:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes]
        if rep.seconds:
            lines.append(f"- evaluation time {rep.seconds:.1f} s")
    return ["\n".join(head) + "\n", "\n".join(lines) + "\n"]


def get_protocol_rule(name: str) -> str:
    from spikedeploy.tracking.metrics import get_protocol

    return get_protocol(name).frames_rule


def to_markdown(rep: EvaluationReport) -> str:
    return "\n".join(_sections(rep))


#: line styles of the curves in order: curves that coincide (identical boxes) stay visible
_STYLES = (("-", 2.6), ("--", 2.0), (":", 2.2), ("-.", 1.6), ((0, (1, 3)), 1.6), ((0, (5, 2, 1, 2)), 1.4))


def _curve_figure(rep: EvaluationReport, key: str, xlabel: str, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikedeploy.tracking import metrics as M

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    proto = M.get_protocol(rep.protocol)
    xs = np.asarray(proto.success_thresholds if key == "success" else proto.precision_distances, dtype=np.float64)
    metric = "P@20" if key == "precision" else next(iter(proto.headline))
    for i, (tr, s) in enumerate(rep.scores.items()):
        h = s["headline"]
        style, width = _STYLES[i % len(_STYLES)]
        label = f"{_label(rep, tr)} [{metric} {h.get(metric, float('nan')):.3f}, {s['frames']} frames]"
        ax.plot(xs, s[key], label=label, linestyle=style, linewidth=width)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of frames")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left" if key == "success" else "lower right")
    fig.tight_layout()
    return fig


def write_report(rep: EvaluationReport, out: Path) -> None:
    """report.md/.json/.html and the success/precision plots into ``out`` (each file atomic)."""
    from spikedeploy.fsutil import atomic_write_bytes, atomic_write_text
    from spikedeploy.htmlreport import HtmlPage, figure_png

    head, rest = _sections(rep)
    atomic_write_text(out / "report.md", head + "\n" + rest)
    _write_json(out / "report.json", rep.to_json())
    page = HtmlPage(rep.title)
    page.markdown(head)
    if rep.scores and any(s.get("success") for s in rep.scores.values()):
        import matplotlib.pyplot as plt

        plots = [("success", "overlap threshold", "Success plot", "success.png")]
        if any(s.get("precision") for s in rep.scores.values()):
            plots.append(("precision", "location error threshold (px)", "Precision plot", "precision.png"))
        for key, xlabel, title, fname in plots:
            fig = _curve_figure(rep, key, xlabel, f"{title} — {rep.protocol}")
            png = figure_png(fig)
            plt.close(fig)
            atomic_write_bytes(out / fname, png)
            page.image_png(png, caption=f"{title.lower()}: every tracker over its own sequences", alt=title)
    page.markdown(rest)
    atomic_write_text(out / "report.html", page.render())


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def _parse_limits(max_sequences) -> Dict[str, int]:
    from spikedeploy.tracking.run import canonical_target

    out = {}
    for k, v in dict(max_sequences or {}).items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"--max-sequences {k}={v!r}: give a positive number of sequences")
        out[canonical_target(k)] = int(v)
    return out


def evaluate(dataset, *, model: Optional[str] = None, targets: Sequence[str] = ("torch",), output,
             format: str = "auto", checkpoint: Optional[str] = None, seed: int = 0, preset: str = "default",
             weight_bits: int = 8, partitions=None, max_sequences: Optional[Mapping[str, int]] = None,
             sequences: Optional[Sequence[str]] = None, workers: Optional[int] = None, address: Optional[str] = None,
             overwrite: bool = False, progress: bool = False) -> EvaluationReport:
    """Track every sequence of ``dataset`` (a folder in an official layout, or a
    :class:`~spikedeploy.tracking.datasets.TrackingDataset`) with SpikeTrack ``model`` once per
    target, write results, records and the report into ``output`` and return the report.
    ``model``: default ``spiketrack-tiny128-t1``; on an event dataset (``format`` ``fe108`` /
    ``visevent``, or detected: :mod:`spikedeploy.tracking.event_datasets`) the event SpikeTrack
    (default ``spiketrack-event-tiny``) tracks every sequence with the event tracker, results in
    the OTB layout, scored with the OTB protocol.
    ``max_sequences``: at most that many sequences (the first ones) for a target, e.g.
    ``{"lava": 3}``; ``sequences``: only these. ``workers``: tasks at once (default: every core);
    1 runs them in this process, more on an embedded local Ray; ``address``: the Ray cluster there. A folder
    holding this configuration's evaluation is resumed; another configuration is refused unless
    ``overwrite``."""
    from tqdm.auto import tqdm

    from spikedeploy.passes.quantize import check_weight_bits
    from spikedeploy.tracking import datasets as DS
    from spikedeploy.tracking import event_datasets as EDS
    from spikedeploy.tracking.run import FIXED_TARGETS, canonical_target, load_tracker_model

    t_start = time.perf_counter()
    events = (isinstance(dataset, EDS.EventTrackingDataset) or format in EDS.EVENT_FORMATS
              or (format == "auto" and not isinstance(dataset, DS.TrackingDataset) and EDS.is_event_dataset(dataset)))
    if events:
        from spikedeploy.tracking.event_run import DEFAULT_EVENT_MODEL, canonical_event_target, load_event_tracker_model

        canonical_target, load_tracker_model = canonical_event_target, load_event_tracker_model  # noqa: F811
        model = DEFAULT_EVENT_MODEL if model is None else model
    model = "spiketrack-tiny128-t1" if model is None else model
    targets = [canonical_target(t) for t in targets]
    if not targets:
        raise ConfigError("evaluate: give at least one target")
    if len(set(targets)) != len(targets):
        raise ConfigError(f"evaluate: a target is named twice in {targets}")
    check_weight_bits(weight_bits)
    if weight_bits != 8 and not any(t in FIXED_TARGETS for t in targets):
        raise ConfigError("--weight-bits applies to the fixed-point targets only (reference-fixed, lava-fixed)")
    if workers is None:
        workers = 1 if address else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                      else (os.cpu_count() or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    limits = _parse_limits(max_sequences)
    unknown = sorted(set(limits) - set(targets))
    if unknown:
        raise ConfigError(f"--max-sequences names {', '.join(unknown)}, which is not among the targets {targets}")
    if partitions is not None and not any(t.startswith("lava") for t in targets):
        raise ConfigError("--partitions applies to the Lava targets only")
    if isinstance(dataset, (DS.TrackingDataset, EDS.EventTrackingDataset)):
        ds = dataset
    else:
        ds = EDS.read_event_dataset(dataset, format) if events else DS.read_dataset(dataset, format)
    if sequences:
        missing = [s for s in sequences if s not in ds.names]
        if missing:
            raise ConfigError(f"--sequences: {', '.join(missing[:5])} not in {ds.root} ({len(ds)} sequences)")
        ds = ds.subset(list(sequences))
    if not len(ds):
        raise InputError(f"{ds.root}: the dataset holds no sequences")
    ckpt = checkpoint
    sha = _file_digest(ckpt) if ckpt not in (None, "bundled", "random") and Path(ckpt).is_file() else None
    config = EvaluationConfig(model=model, checkpoint=ckpt, checkpoint_sha256=sha, seed=int(seed), preset=preset,
                              weight_bits=int(weight_bits), partitions=None if partitions is None else str(partitions),
                              dataset=str(Path(ds.root).resolve()), format=ds.format)
    _, weights = load_tracker_model(model, checkpoint, seed=seed)  # bad model/checkpoint: fail before any work
    out = Path(output)
    inputs = [ds.root] + ([ckpt] if sha else [])
    done = _open_folder(out, config, overwrite=overwrite, inputs=inputs)
    tasks = []
    for t in targets:
        names = ds.names[: limits[t]] if t in limits else ds.names
        tasks += [(ds[n], t) for n in names if (n, t) not in done]
    executor_cls = RayExecutor if (workers > 1 or address) else LocalExecutor
    records: Dict[str, Dict[str, SequenceRecord]] = {t: {} for t in targets}
    for (n, t), r in done.items():
        if t in records:
            records[t][n] = r
    skipped = sum(len(v) for v in records.values())
    executor = executor_cls(workers, address) if tasks else None
    try:
        with tqdm(total=len(tasks) + skipped, initial=skipped, desc="evaluate", unit="sequence",
                  disable=not progress) as bar:
            for rec in (executor.run(config, tasks) if executor else ()):
                _write_json(_record_path(out, rec.target, rec.sequence), rec.to_json())
                if rec.ok:
                    DS.write_sequence_results(out / RESULTS, tracker_name(model, rec.target), rec.sequence,
                                              np.asarray(rec.boxes), np.asarray(rec.times),
                                              getattr(ds, "results_format", ds.format))
                records[rec.target][rec.sequence] = rec
                bar.update(1)
                bar.set_postfix_str(f"{rec.target} {rec.sequence} {rec.status}", refresh=False)
    finally:
        if executor is not None:
            executor.close()
    notes = [f"model {model}, weights: {weights}, tracker preset {preset}; results files in "
             f"{RESULTS}/{tracker_name(model, '<target>')}/ ({getattr(ds, 'results_format', ds.format)} toolkit layout)",
             f"{len(tasks)} tasks run now on {executor.name if executor else 'nothing'}"
             + (f" ({executor.workers} workers)" if executor else "") + f", {skipped} finished before (resumed)"]
    for t, k in limits.items():
        notes.append(f"{t} tracked the first {min(k, len(ds))} of {len(ds)} sequences (--max-sequences)")
    ok = {t: {n: r for n, r in recs.items() if r.ok} for t, recs in records.items()}
    rep = build_report(
        f"spikedeploy evaluate — {model} on {Path(ds.root).name}", ds,
        {tracker_name(model, t): {n: np.asarray(r.boxes) for n, r in v.items()} for t, v in ok.items()},
        times={tracker_name(model, t): {n: r.times for n, r in v.items()} for t, v in ok.items()},
        failed={tracker_name(model, t): {n: r.error for n, r in recs.items() if not r.ok} for t, recs in records.items()},
        records={t: v for t, v in ok.items()}, config=dict(asdict(config), targets=targets, weights=weights),
        protocol=getattr(ds, "protocol", None),
        labels={tracker_name(model, t): t for t in targets}, output=out,
        notes=notes, seconds=time.perf_counter() - t_start)
    write_report(rep, out)
    return rep


# ---------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------


def score_results(results, dataset, *, format: str = "auto", trackers: Optional[Sequence[str]] = None,
                  output=None, overwrite: bool = False) -> EvaluationReport:
    """Score results files in a toolkit layout (``results/<tracker>/…``, anyone's) against
    ``dataset`` with its protocol; every tracker folder (or ``trackers``). A tracker without a
    results file for some sequence is scored on the sequences it has (the report says how many).
    With ``output`` the report is written there (atomically)."""
    from spikedeploy.fsutil import atomic_directory, check_output_dir
    from spikedeploy.tracking import datasets as DS

    ds = dataset if isinstance(dataset, DS.TrackingDataset) else DS.read_dataset(dataset, format)
    root = Path(results)
    if not root.is_dir():
        raise InputError(f"results folder {root} does not exist")
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=(root, ds.root))
    names = list(trackers) if trackers else DS.result_trackers(root, ds.format)
    if not names:
        raise InputError(f"{root}: no tracker results folders in the {ds.format} layout")
    boxes, times, missing = {}, {}, {}
    for tr in names:
        boxes[tr], times[tr] = {}, {}
        for n in ds.names:
            if not DS.result_paths(root, tr, n, ds.format)[0].is_file():
                missing.setdefault(tr, []).append(n)
                continue
            boxes[tr][n], times[tr][n] = DS.read_sequence_results(root, tr, n, ds.format)
        if not boxes[tr]:
            raise InputError(f"{root / tr}: no results file for any of the {len(ds)} sequences of {ds.root}")
    notes = [f"{tr}: no results for {len(v)} of {len(ds)} sequences ({', '.join(v[:5])}{', …' if len(v) > 5 else ''})"
             for tr, v in missing.items()]
    rep = build_report(f"spikedeploy score — {root.name} on {Path(ds.root).name}", ds, boxes, times=times, notes=notes,
                       output=output)
    if output is not None:
        with atomic_directory(output, overwrite=overwrite, command="score") as tmp:
            write_report(rep, Path(tmp))
    return rep
