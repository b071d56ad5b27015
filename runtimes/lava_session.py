"""The lifetime of one Lava runtime: start, run and stop with every wait bounded, every child
process ended and every shared-memory segment removed, on success, on error and on Ctrl-C/SIGTERM.

Why Lava 0.10 alone hangs (read off ``lava.magma.runtime``): ``Runtime`` starts one OS process
per ProcessModel plus a runtime service (``multiprocessing`` fork) and a ``SharedMemoryManager``
server process; they talk through shared-memory channels whose ``recv`` waits, without a timeout,
on the ``threading.Condition`` of a ``CspRecvQueue``. On Ctrl-C every child died of its own
KeyboardInterrupt (one traceback each), and the parent's ``finally: stop()`` then waited in
``CspRecvPort.recv`` for a TERMINATED answer from the dead runtime service, forever. On SIGTERM the
parent died at once and its non-daemon children, blocked in ``recv``, stayed (re-parented to PID
1) with the manager server holding the ``/dev/shm`` segments. An exception in a ProcessModel ends
only that child; its neighbours wait forever for its messages, the runtime service waits for
their answers, and the parent waits for the service's, in ``CspSelector.select`` (and would then
``join`` the blocked children).

:class:`LavaSession` replaces those waits with bounded ones on Lava's own ports and children:

- ``run`` starts a non-blocking ``RunSteps`` and waits for the runtime service's answer with a
  timeout, looking at the children meanwhile: a child that reported an exception (see
  :func:`spikedeploy.lava_compat.patch_runtime`) or died ends the run with one
  :class:`~spikedeploy.lava_compat.LavaProcessError` naming it;
- ``close`` stops a healthy runtime the way Lava does (STOP, TERMINATED, join) but within
  ``stop_timeout``; otherwise, and on any exception (KeyboardInterrupt and the CLI's SIGTERM
  exception included), it ends the children (SIGTERM, then SIGKILL after ``kill_timeout``), shuts
  down the shared-memory server and unlinks whatever segment is still there; meanwhile SIGINT and
  SIGTERM are held back (:func:`deferred_signals`) so that a second Ctrl-C cannot cut the cleanup
  short;
- the Lava processes are detached from the runtime afterwards, so Lava's ``__del__`` hooks (which
  call the blocking ``stop``) have nothing left to do.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from typing import Optional

from spikedeploy.lava_compat import LavaProcessError, deferred_signals, exit_text

__all__ = ["LavaSession", "LavaProcessError", "deferred_signals"]

#: seconds a graceful stop may take before the children are ended by force
STOP_TIMEOUT_S = 30.0
#: seconds between SIGTERM and SIGKILL when the children are ended by force
KILL_TIMEOUT_S = 3.0
#: seconds between two looks at the children while waiting for the runtime
POLL_S = 0.05
#: seconds to wait for a failed child's report after the runtime service reported an error
REPORT_WAIT_S = 2.0


def _alive(actor) -> bool:
    try:
        return actor.is_alive()
    except (ValueError, AssertionError):  # closed, or not a child of this process
        return False


def _exitcode(actor):
    try:
        return actor.exitcode
    except ValueError:  # closed by Lava's join: it exited
        return 0


def _join(actor, timeout: float) -> None:
    try:
        multiprocessing.Process.join(actor, max(0.0, timeout))  # Lava's SystemProcess.join has no timeout
    except (ValueError, AssertionError):
        pass


def _label(actor) -> str:
    return getattr(actor, "spikedeploy_label", None) or getattr(actor, "name", "?")


class LavaSession:
    """One Lava runtime for the process graph connected to ``proc``.

    Use as a context manager::

        with LavaSession(proc, run_cfg, compile_config) as session:
            session.start()
            session.run(num_steps)
            ... read Vars ...
        # stopped, or on an exception ended by force; nothing left either way

    ``timings`` holds the seconds spent starting (``start``), running (``steps``) and stopping
    (``stop``)."""

    def __init__(self, proc, run_cfg, compile_config: Optional[dict] = None, *,
                 stop_timeout: float = STOP_TIMEOUT_S, kill_timeout: float = KILL_TIMEOUT_S) -> None:
        self.proc, self.run_cfg, self.compile_config = proc, run_cfg, compile_config
        self.stop_timeout, self.kill_timeout = float(stop_timeout), float(kill_timeout)
        self.timings = {"start": 0.0, "steps": 0.0, "stop": 0.0}
        self._runtime = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "LavaSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(force=exc_type is not None)

    def start(self) -> None:
        """Compile the graph and start Lava's processes (raises LavaProcessError if one fails)."""
        t = time.perf_counter()
        try:
            self.proc.create_runtime(run_cfg=self.run_cfg, compile_config=self.compile_config)
        finally:
            self._runtime = self.proc.runtime  # set by Lava before its children start
            self.timings["start"] += time.perf_counter() - t

    def run(self, num_steps: int) -> None:
        """Run ``num_steps`` steps; returns when the runtime service reports them done."""
        from spikedeploy.lava_compat import import_lava

        _, run_conditions = import_lava()
        from lava.magma.runtime.mgmt_token_enums import MGMT_RESPONSE, enum_equal

        rt = self._require_runtime()
        t = time.perf_counter()
        self.proc.run(condition=run_conditions.RunSteps(num_steps=int(num_steps), blocking=False))
        answers = self._await(rt.service_to_runtime, deadline=None)
        if not all(enum_equal(a, MGMT_RESPONSE.DONE) for a in answers):
            raise self._service_error(answers)
        rt.wait()  # Lava's own bookkeeping; the answers are there, so it does not block
        self.timings["steps"] += time.perf_counter() - t

    def close(self, force: bool = False) -> None:
        """Stop the runtime (idempotent). ``force`` (or a runtime that cannot be stopped in
        ``stop_timeout``) ends its children by signal; shared memory is released either way."""
        if self._closed:
            return
        t = time.perf_counter()
        with deferred_signals():
            try:
                rt = self._runtime if self._runtime is not None else getattr(self.proc, "runtime", None)
                if rt is None:
                    return
                self._runtime = rt
                if not force:
                    try:
                        self._stop(rt)
                        return
                    except _NotStoppable:
                        pass
                    except BaseException:
                        self._kill(rt)
                        raise
                self._kill(rt)
            finally:
                self._closed = True
                self.timings["stop"] += time.perf_counter() - t

    # -- waiting -----------------------------------------------------------------------------

    def _require_runtime(self):
        if self._runtime is None:
            self._runtime = self.proc.runtime
        if self._runtime is None:
            raise RuntimeError("LavaSession.run before start")
        return self._runtime

    def _actors(self, rt=None) -> list:
        rt = rt if rt is not None else self._runtime
        mi = getattr(rt, "_messaging_infrastructure", None) if rt is not None else None
        return list(mi.actors) if mi is not None else []

    def failure(self, stopping: bool = False) -> Optional[LavaProcessError]:
        """The first child that reported an exception, else the first that died (``stopping``:
        that died with a non-zero exit code); None if all run."""
        dead = None
        for actor in self._actors():
            try:
                report = actor.exception  # non-blocking: reads the child's pipe if it wrote
            except (OSError, EOFError, ValueError):
                report = None
            if report is not None:
                err = report[0]
                return LavaProcessError(_label(actor), str(err), getattr(err, "exit_code", 1))
            code = _exitcode(actor)
            if dead is None and code is not None and not (stopping and code == 0):
                dead = LavaProcessError(_label(actor), f"exited unexpectedly ({exit_text(code)})")
        return dead

    def _await(self, ports, deadline: Optional[float], stopping: bool = False) -> list:
        """Wait until every port has a message, watching the children; return the messages
        (peeked, not consumed). Raises the child failure, or TimeoutError after ``deadline``."""
        ports = list(ports)
        ready = threading.Event()
        for p in ports:
            p.observer = ready.set  # called by the port's thread when a message arrives
        try:
            while True:
                ready.clear()
                if all(p.probe() for p in ports):
                    return [p.peek() for p in ports]
                err = self.failure(stopping)
                if err is not None:
                    raise err
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError
                ready.wait(POLL_S)
        finally:
            for p in ports:
                p.observer = None

    def _service_error(self, answers) -> LavaProcessError:
        """The runtime service answered something else than DONE (it forwards a ProcessModel's
        ERROR): the child's own report, which follows within moments, else the answer itself."""
        deadline = time.monotonic() + REPORT_WAIT_S
        while time.monotonic() < deadline:
            err = self.failure()
            if err is not None:
                return err
            time.sleep(POLL_S)
        return LavaProcessError("runtime service", f"answered {[int(a[0]) for a in answers]} instead of DONE")

    # -- ending ------------------------------------------------------------------------------

    def _stop(self, rt) -> None:
        """Lava's ``Runtime.stop`` with bounded waits; raises (the caller then kills) if the
        runtime is not in a state to stop or does not answer in time."""
        from lava.magma.runtime.mgmt_token_enums import MGMT_COMMAND, MGMT_RESPONSE, enum_equal

        if not getattr(rt, "_is_initialized", False) or not rt._is_started or rt._is_running:
            # never started (its children wait for a first command) or still running: nothing to
            # save, and Lava's stop would join children that do not exit
            raise _NotStoppable
        deadline = time.monotonic() + self.stop_timeout
        for port in rt.runtime_to_service:
            port.send(MGMT_COMMAND.STOP)
        try:
            answers = self._await(rt.service_to_runtime, deadline, stopping=True)
        except TimeoutError:
            raise LavaProcessError("runtime service", f"did not stop within {self.stop_timeout:g} s") from None
        for port in rt.service_to_runtime:
            port.recv()
        if not all(enum_equal(a, MGMT_RESPONSE.TERMINATED) for a in answers):
            raise self._service_error(answers)
        rt.join()  # the ports
        actors = self._actors(rt)
        for actor in actors:
            _join(actor, deadline - time.monotonic())
        if any(_alive(a) for a in actors):
            raise LavaProcessError(_label(next(a for a in actors if _alive(a))),
                                   f"did not exit within {self.stop_timeout:g} s of STOP")
        rt._is_running = rt._is_started = False
        self._release(rt)

    def _kill(self, rt) -> None:
        """End every child of the runtime (SIGTERM, then SIGKILL), release its shared memory."""
        actors = self._actors(rt)
        for actor in actors:
            if _alive(actor):
                actor.terminate()  # the children take SIGTERM's default action (lava_compat)
        deadline = time.monotonic() + self.kill_timeout
        for actor in actors:
            _join(actor, deadline - time.monotonic())
        for actor in actors:
            if _alive(actor):
                actor.kill()
                _join(actor, 1.0)
        with contextlib.suppress(Exception):
            rt.join()  # release the parent's port threads
        rt._is_running = rt._is_started = False
        self._release(rt)

    def _release(self, rt) -> None:
        """Shut down the shared-memory server (it unlinks its segments), unlink any segment it
        left (it may have been killed), stop the watchdog manager, detach the Lava processes."""
        mi = getattr(rt, "_messaging_infrastructure", None)
        smm = getattr(mi, "smm", None) if mi is not None else None
        if smm is not None:
            handles = list(getattr(smm, "_shared_memory_handles", []))
            for h in handles:
                with contextlib.suppress(BufferError, OSError):
                    h.close()
            manager = getattr(smm, "_manager", None)
            if manager is not None:
                with contextlib.suppress(Exception):
                    manager.shutdown()  # bounded: 1 s, then SIGTERM, then SIGKILL (multiprocessing)
            smm._shared_memory_handles = []
            smm._manager = None
            for h in handles:
                _unlink_if_present(h)
        if mi is not None:
            for actor in mi.actors:
                actor._is_done = True  # Lava's join would wait again; all are reaped
        watchdog = getattr(rt, "_watchdog_manager", None)
        if watchdog is not None:
            with contextlib.suppress(Exception):
                watchdog.stop()
        executable = getattr(rt, "_executable", None)
        for p in getattr(executable, "process_list", None) or []:
            p._runtime = None  # Process.__del__ / stop() see no runtime


class _NotStoppable(Exception):
    """Internal: the runtime cannot be stopped gracefully; end it by force."""


def _unlink_if_present(handle) -> None:
    """Unlink a shared-memory segment unless it is gone already (unlinking a gone segment would
    unregister it twice with multiprocessing's resource tracker, which then prints a traceback)."""
    name = getattr(handle, "name", None)
    if not name:
        return
    if os.path.isdir("/dev/shm") and not os.path.exists(os.path.join("/dev/shm", name.lstrip("/"))):
        return
    with contextlib.suppress(FileNotFoundError):
        handle.unlink()
