"""Clean Lava shutdown: Ctrl-C / SIGTERM during a Lava run, or an error in a Lava child process,
ends the run within 10 s with one line on stderr (no traceback), the right exit code, no process
left and no shared-memory entry left.

The CLI tests start the real ``spikedeploy`` executable in a new session (so a signal can go to
its whole process group) on a small Lava bundle with many inputs (the run lasts many seconds), wait
until Lava's children exist and run, then signal. What the run owned is found from the outside:
its processes are those of its session (``/proc/*/stat``), its shared-memory segments those that
its processes map (``/proc/PID/maps``), its record directory is made under a private
``SPIKEDEPLOY_LAVA_RECORDS``. Other jobs on the machine may create ``/dev/shm`` entries at the same
time, so nothing else is compared.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from spikedeploy import lava_compat
from spikedeploy.cli import main
from spikedeploy.lava_compat import LavaProcessError
from spikedeploy.runtimes import lava as lava_run
from spikedeploy.runtimes import lava_procs
from spikedeploy.runtimes.lava_session import LavaSession, deferred_signals

SPIKEDEPLOY = Path(sys.executable).with_name("spikedeploy")
#: a per-layer Lava run of the test bundle has this many OS processes (21 process models, the
#: runtime service, the shared-memory server); the CLI waits for them before signalling
LAVA_CHILDREN = 20
#: a run in P partitions: the CLI, P partitions, the runtime service, the shared-memory server
PARTITIONED_CHILDREN = {1: 4, 2: 5}
#: the required bound from signal (or failure) to a clean exit
CLEAN_EXIT_S = 10.0


# --------------------------------------------------------------------------------------------
# helpers: what a process tree owns, seen from /proc
# --------------------------------------------------------------------------------------------

def _stat(pid: int):
    """(state, ppid, session) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[3])


def _session(sid: int) -> dict:
    """Live (not zombie) processes of session ``sid``: pid -> ppid."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[2] == sid and st[0] != "Z":
                out[int(entry)] = st[1]
    return out


def _children_of(pid: int) -> dict:
    """Live descendants of ``pid`` (pid -> ppid)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z":
                parent[int(entry)] = st[1]
    out, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out.update({p: parent[p] for p in frontier})
    return out


def _mapped_shm(pids) -> set:
    """Names of the /dev/shm entries the processes map (Lava's channels: psm_*)."""
    names = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in lines:
            if "/dev/shm/" in line and "(deleted)" not in line:
                names.add(line.split("/dev/shm/", 1)[1].strip())
    return names


def _left_in_shm(names) -> list:
    return sorted(n for n in names if os.path.exists(os.path.join("/dev/shm", n)))


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The sdt-test model (14 neuron layers, 21 Lava processes) as a Lava bundle, and inputs that
    keep Lava busy for many seconds (600 streamed samples: ~1.5 s per 100 on an idle core)."""
    root = tmp_path_factory.mktemp("lava-shutdown")
    path = root / "m.lava"
    assert main(["export", "--target", "lava", "--neuron", "ilif", "-o", str(path)]) == 0
    np.save(root / "long.npy", np.random.default_rng(0).normal(size=(1, 600, 3, 16, 16)))
    np.save(root / "short.npy", np.random.default_rng(1).normal(size=(1, 2, 3, 16, 16)))
    return root


def _launch(args, tmp_path, env_extra=None, python_code=None):
    """Start ``spikedeploy ARGS`` (or ``python -c CODE ARGS``) in a new session; stdout and stderr
    go to files. Its Lava record directory is made under ``tmp_path/records``."""
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    env = dict(os.environ, SPIKEDEPLOY_LAVA_RECORDS=str(records), **(env_extra or {}))
    cmd = [str(SPIKEDEPLOY), *args] if python_code is None else [sys.executable, "-c", python_code, *args]
    out, err = open(tmp_path / "stdout.txt", "w"), open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=err, env=env, cwd=tmp_path)
    out.close()
    err.close()
    return proc


def _wait_for_lava(proc, timeout=180.0, children=LAVA_CHILDREN, channels=20):
    """Wait until the CLI's Lava children (``children`` processes in its session) exist and the
    run is under way; return the shared-memory names they map (more than ``channels``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if len(_session(proc.pid)) >= children:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no Lava children after {timeout} s")
    time.sleep(1.5)  # past start-up: every child runs
    assert proc.poll() is None, "the run ended before it could be interrupted"
    names = _mapped_shm(_session(proc.pid))
    assert len(names) > channels, names  # Lava's channels (the parent maps every one)
    return names


def _finish(proc, tmp_path, t0, names, timeout=CLEAN_EXIT_S):
    """Wait for the CLI and every process of its session to end (within ``timeout`` of ``t0``);
    return (exit code, stderr). Asserts nothing left: processes, shared memory, record directory."""
    try:
        rc = proc.wait(timeout=max(0.1, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        left = _session(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in left:  # children re-parented away from the group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"spikedeploy did not exit within {timeout} s; {len(left)} processes of its session left")
    # the resource tracker of multiprocessing ends when the CLI has closed its pipe: allow it that
    while _session(proc.pid) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    left = _session(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the run still alive {elapsed:.1f} s after the signal: {left}"
    assert elapsed < timeout, elapsed
    assert _left_in_shm(names) == []
    assert list((tmp_path / "records").iterdir()) == []
    return rc, (tmp_path / "stderr.txt").read_text()


# --------------------------------------------------------------------------------------------
# signals to the CLI
# --------------------------------------------------------------------------------------------

CASES = {
    "sigint-group": (signal.SIGINT, True, 130, "spikedeploy: interrupted"),
    "sigterm-group": (signal.SIGTERM, True, 143, "spikedeploy: terminated"),
    "sigterm-cli": (signal.SIGTERM, False, 143, "spikedeploy: terminated"),
    "sigint-cli": (signal.SIGINT, False, 130, "spikedeploy: interrupted"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_signal_during_lava_run_exits_cleanly(bundle, tmp_path, case):
    signum, group, code, line = CASES[case]
    proc = _launch(["run", "--target", "lava", str(bundle / "m.lava"), "--input", str(bundle / "long.npy"),
                    "--no-progress", "--partitions", "per-layer", "-o", str(tmp_path / "out.npz")], tmp_path)
    names = _wait_for_lava(proc)
    t0 = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, signum)
    rc, err = _finish(proc, tmp_path, t0, names)
    assert rc == code and _one_line(err) == line
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("group", [True, False], ids=["group", "cli"])
def test_sigint_during_partitioned_lava_run_exits_cleanly(bundle, tmp_path, group):
    """The same in two partitions (two Lava processes hosting the 21 processes): the partitions'
    OS processes, the runtime service and the shared-memory server end, nothing is left."""
    proc = _launch(["run", "--target", "lava", str(bundle / "m.lava"), "--input", str(bundle / "long.npy"),
                    "--no-progress", "--partitions", "2", "-o", str(tmp_path / "out.npz")], tmp_path)
    names = _wait_for_lava(proc, children=PARTITIONED_CHILDREN[2], channels=4)
    assert len(_session(proc.pid)) < LAVA_CHILDREN  # fewer OS processes than per layer
    t0 = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, signal.SIGINT)
    rc, err = _finish(proc, tmp_path, t0, names)
    assert rc == 130 and _one_line(err) == "spikedeploy: interrupted"
    assert not (tmp_path / "out.npz").exists()


def test_sigkill_of_the_cli_leaves_no_lava_process(bundle, tmp_path):
    """Even a CLI killed outright (SIGKILL, the out-of-memory killer) takes its Lava children
    along (PR_SET_PDEATHSIG), and multiprocessing's resource tracker, once they are gone, removes
    the segments. Only the record directory stays: nothing of the CLI runs to remove it."""
    proc = _launch(["run", "--target", "lava", str(bundle / "m.lava"), "--input", str(bundle / "long.npy"),
                    "--no-progress", "--partitions", "per-layer"], tmp_path)
    names = _wait_for_lava(proc)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=CLEAN_EXIT_S) == -signal.SIGKILL
    while _session(proc.pid) and time.monotonic() - t0 < CLEAN_EXIT_S:
        time.sleep(0.05)
    left = _session(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left
    while _left_in_shm(names) and time.monotonic() - t0 < CLEAN_EXIT_S:
        time.sleep(0.05)
    assert _left_in_shm(names) == []


def test_sigint_during_lava_audit_exits_cleanly(bundle, tmp_path):
    """``audit --runtime lava`` goes through the same runtime (its default placement, auto: one
    partition): the same clean end."""
    proc = _launch(["audit", "--neuron", "ilif", "--runtime", "lava", "--inputs", "600", "-o",
                    str(tmp_path / "audit")], tmp_path)
    names = _wait_for_lava(proc, children=PARTITIONED_CHILDREN[1], channels=1)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    rc, err = _finish(proc, tmp_path, t0, names)
    assert rc == 130 and _one_line(err) == "spikedeploy: interrupted"
    assert not (tmp_path / "audit").exists()


# --------------------------------------------------------------------------------------------
# an error inside a Lava child
# --------------------------------------------------------------------------------------------

INJECT = textwrap.dedent("""
    import os
    import sys
    from spikedeploy.runtimes import lava_procs

    calls = []
    original = lava_procs.neuron_step
    fail_at = int(os.environ.get("FAIL_AT", "100"))

    def fail_later(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:  # seconds into the run, in every neuron process
            raise ValueError("injected failure in a neuron step")
        return original(*args, **kwargs)

    lava_procs.neuron_step = fail_later  # forked Lava children inherit it
    from spikedeploy.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("partitions", ["per-layer", "1"])
def test_child_error_is_one_line_and_leaves_nothing(bundle, tmp_path, partitions):
    proc = _launch(["run", "--target", "lava", str(bundle / "m.lava"), "--input", str(bundle / "long.npy"),
                    "--no-progress", "--partitions", partitions], tmp_path, python_code=INJECT,
                   # one partition steps all 14 neurons: the 2800th call is about a second into the run
                   env_extra={"FAIL_AT": "100" if partitions == "per-layer" else "2800"})
    children, channels = (LAVA_CHILDREN, 20) if partitions == "per-layer" else (PARTITIONED_CHILDREN[1], 1)
    t0 = time.monotonic()
    while len(_session(proc.pid)) < children:  # start-up (imports, compile) is not bounded here
        assert proc.poll() is None and time.monotonic() - t0 < 180, (tmp_path / "stderr.txt").read_text()
        time.sleep(0.05)
    names = _mapped_shm(_session(proc.pid))  # the parent made every channel before the children
    t1 = time.monotonic()
    assert len(names) > channels, names
    rc, err = _finish(proc, tmp_path, t1, names)
    line = _one_line(err)
    assert rc == 1, err
    assert line.startswith("spikedeploy: error: Lava process "), line
    if partitions == "per-layer":
        assert line.endswith("failed: ValueError: injected failure in a neuron step"), line
        assert "(PyIntegerNeuronFloat" in line  # the failing process is named with its model
    else:  # the partition, and inside it the member and its model
        assert "partition0 (PyPartitionModel" in line, line
        assert re.search(r"failed: MemberError: neuron:\S+ \(PyIntegerNeuronFloat\w*\): ValueError: injected "
                         r"failure in a neuron step$", line), line


def test_bundle_with_negative_end_step_is_refused(bundle, tmp_path, capsys):
    import json
    import shutil

    bad = tmp_path / "bad.lava"
    shutil.copytree(bundle / "m.lava", bad)
    desc = json.loads((bad / "graph.json").read_text())
    desc["end_step"] = -1000
    (bad / "graph.json").write_text(json.dumps(desc))
    t0 = time.monotonic()
    rc = main(["run", "--target", "lava", str(bad), "--input", str(bundle / "short.npy"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "end_step" in _one_line(err), err
    assert time.monotonic() - t0 < CLEAN_EXIT_S
    assert _lava_children() == {}  # multiprocessing's resource tracker may live on from earlier tests


# --------------------------------------------------------------------------------------------
# in-process: failures in the run and in the build of a child, the session, deferred signals
# --------------------------------------------------------------------------------------------

@pytest.fixture
def created_segments(monkeypatch):
    """Names of the shared-memory segments Lava creates during the test."""
    lava_compat.import_lava()
    from lava.magma.runtime.message_infrastructure import shared_memory_manager as smm_module

    names = []
    original = smm_module.SharedMemoryManager.create_shared_memory

    def spy(self, size):
        handle = original(self, size)
        names.append(handle.name)
        return handle

    monkeypatch.setattr(smm_module.SharedMemoryManager, "create_shared_memory", spy)
    return names


def _assert_nothing_left(created):
    assert created, "the spy saw no shared memory: the test did not reach Lava"
    assert _left_in_shm(created) == []
    deadline = time.monotonic() + 2.0  # the tracker of multiprocessing is ours and stays; reap others
    while time.monotonic() < deadline and _lava_children():
        time.sleep(0.05)
    assert _lava_children() == {}


def _lava_children() -> dict:
    """Live children of this test process other than multiprocessing's resource tracker."""
    out = {}
    for pid, ppid in _children_of(os.getpid()).items():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in cmd:
            out[pid] = ppid
    return out


@pytest.mark.parametrize("partitions", ["per-layer", 1])
def test_error_in_a_child_run_phase_raises_naming_it(bundle, monkeypatch, created_segments, partitions):
    def fail(*args, **kwargs):
        raise ValueError("injected")

    monkeypatch.setattr(lava_procs, "neuron_step", fail)
    x = np.load(bundle / "short.npy")
    t0 = time.monotonic()
    with pytest.raises(LavaProcessError) as info:
        lava_run.run(bundle / "m.lava", x, partitions=partitions)
    elapsed = time.monotonic() - t0
    assert info.value.exit_code == 1 and str(info.value).startswith("Lava process ")
    if partitions == "per-layer":
        assert info.value.error == "ValueError: injected"
        assert "(PyIntegerNeuronFloat" in info.value.process
    else:  # the partition fails, naming its member and the member's model
        assert "partition0 (PyPartitionModel" in info.value.process
        assert re.fullmatch(r"MemberError: neuron:\S+ \(PyIntegerNeuronFloat\w*\): ValueError: injected",
                            info.value.error), info.value.error
    assert "\n" not in str(info.value)
    assert elapsed < 60  # start-up included; without the fix it never returns
    _assert_nothing_left(created_segments)


@pytest.mark.parametrize("partitions", ["per-layer", 2])
def test_error_in_a_child_build_keeps_its_exit_code(bundle, monkeypatch, created_segments, partitions):
    """A child whose model raises a SpikedeployError while it is built: start-up stops, the error's
    exit code (2: bad input) is kept, nothing is printed by Lava. In a partition the members are
    built with the partition's model: the same start-up failure, naming the member."""
    from spikedeploy.errors import InputError

    def bad_init(self, proc_params):
        raise InputError("model refuses its parameters")

    monkeypatch.setattr(lava_procs.PyReadoutFloat, "__init__", bad_init)
    x = np.load(bundle / "short.npy")
    with pytest.raises(LavaProcessError) as info:
        lava_run.run(bundle / "m.lava", x, partitions=partitions)
    assert info.value.exit_code == 2
    if partitions == "per-layer":
        assert info.value.error == "InputError: model refuses its parameters"
        assert "(PyReadoutFloat" in info.value.process
    else:
        assert "(PyPartitionModel" in info.value.process
        assert re.fullmatch(r"MemberError: readout:\S+ \(PyReadoutFloat\w*\): InputError: model refuses its "
                            r"parameters", info.value.error), info.value.error
    _assert_nothing_left(created_segments)


@pytest.mark.parametrize("partitions", ["per-layer", 1])
@pytest.mark.parametrize("phase", ["start-up", "run"])
def test_child_that_dies_without_a_word_is_reported(bundle, monkeypatch, created_segments, phase, partitions):
    """A child that vanishes (here: os._exit; in life the out-of-memory killer) in its build or in
    its run: the parent notices, names it, and ends the rest."""
    def vanish(*args, **kwargs):
        os._exit(3)

    if phase == "run":
        monkeypatch.setattr(lava_procs, "neuron_step", vanish)
    else:
        monkeypatch.setattr(lava_procs.PyReadoutFloat, "__init__", vanish)
    with pytest.raises(LavaProcessError) as info:
        lava_run.run(bundle / "m.lava", np.load(bundle / "short.npy"), partitions=partitions)
    expected = "exited during start-up (exit code 3)" if phase == "start-up" else "exited unexpectedly (exit code 3)"
    assert info.value.error == expected and info.value.exit_code == 1
    if partitions == "per-layer":
        assert ("(PyReadoutFloat" if phase == "start-up" else "(PyIntegerNeuronFloat") in info.value.process
    else:  # the partition's OS process is the one that died
        assert "partition0 (PyPartitionModel" in info.value.process
    _assert_nothing_left(created_segments)


def test_keyboard_interrupt_in_the_parent_ends_the_children(bundle, monkeypatch, created_segments):
    """Ctrl-C arriving while the parent waits for the run (here: raised by the first look at the
    children) ends the run with KeyboardInterrupt, and nothing is left."""
    calls = []
    original = LavaSession.failure

    def interrupted(self, stopping=False):
        calls.append(stopping)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, stopping)

    monkeypatch.setattr(LavaSession, "failure", interrupted)
    x = np.load(bundle / "long.npy")[:, :100]
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lava_run.run(bundle / "m.lava", x)
    assert len(calls) == 3 and time.monotonic() - t0 < 60
    _assert_nothing_left(created_segments)


def test_driver_error_while_reading_records_ends_the_children(bundle, monkeypatch, created_segments):
    """An error in the parent (here: reading a process's record after the run) propagates as it
    is, and the runtime is ended all the same."""
    from spikedeploy.exporters import lava as lava_export

    x = np.load(bundle / "short.npy")
    loaded = lava_export.load(bundle / "m.lava")  # before np.load is broken

    def unreadable(*args, **kwargs):
        raise OSError("record unreadable")

    monkeypatch.setattr(lava_run.np, "load", unreadable)
    with pytest.raises(OSError, match="record unreadable"):
        lava_run.run(loaded, x)
    monkeypatch.undo()
    _assert_nothing_left(created_segments)


def test_successful_run_leaves_nothing(bundle, created_segments):
    x = np.load(bundle / "short.npy")
    r = lava_run.run(bundle / "m.lava", x)
    assert r.outputs["head"].shape == (1, 2, 10)
    assert sum(int(q.sum()) for q in r.spike_counts.values()) > 0
    assert set(r.info["lava_phase_s"]) == {"start", "steps", "read", "stop"}
    _assert_nothing_left(created_segments)


def test_deferred_signals_delivers_after_the_block():
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a handler would run here; the recorder only notes it
            seen.append("cleanup finished")
        time.sleep(0.05)  # delivered again, to the original handler
    assert seen == ["cleanup finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, line", [(signal.SIGINT, 130, "spikedeploy: interrupted"),
                                                (signal.SIGTERM, 143, "spikedeploy: terminated")])
def test_signal_during_lava_track_exits_cleanly(tmp_path, signum, code, line):
    """``track --target lava`` (one Lava runtime per template/search call, a hundred-odd processes
    each): the signal to the whole group ends it as cleanly."""
    np.save(tmp_path / "clip.npy", np.random.default_rng(0).integers(0, 255, size=(4, 128, 128, 3), dtype=np.uint8))
    proc = _launch(["track", "--clip", "clip.npy", "--init-box", "40,40,30,30", "--target", "lava", "--no-gif",
                    "--no-progress", "--partitions", "per-layer", "-o", str(tmp_path / "track")], tmp_path)
    names = _wait_for_lava(proc, timeout=300)
    t0 = time.monotonic()
    os.killpg(proc.pid, signum)
    rc, err = _finish(proc, tmp_path, t0, names)
    assert rc == code and _one_line(err) == line
    assert not (tmp_path / "track").exists()
