"""Make lava-nc 0.10.0 importable on Python 3.11; the single entry point for Lava imports.

lava-nc 0.10.0 declares ``Python < 3.11`` and is no longer maintained. Its only known 3.11 break
is in ``lava/magma/compiler/var_model.py``: dataclasses such as ``CoreEncoder`` declare fields
like ``x: ByteEncoder = ByteEncoder()``. Since Python 3.11, ``dataclasses`` rejects any unhashable
default (a dataclass instance with ``eq=True`` is unhashable), so importing the Lava compiler
raises ``ValueError: mutable default ... use default_factory``.

:func:`install` puts a finder on :data:`sys.meta_path` that intercepts exactly that one module.
Its loader reads the original source file, rewrites each such default to
``field(default_factory=ByteEncoder)`` (one fresh encoder per instance; on Python <= 3.10 all
instances silently shared a single encoder object), adds ``field`` to the
module's ``dataclasses`` import on the same line so that line numbers in tracebacks stay right,
and executes the result under the original file name. Nothing on disk is modified.

Every Lava import in spikedeploy goes through this module: call :func:`import_lava` (or
:func:`install` first and then import ``lava.*`` as usual). If lava-nc is missing an
:class:`ImportError` says how to install it; if the source does not look like lava-nc 0.10.0
a :class:`LavaCompatError` names the file and the pattern that was expected.

A second Lava quirk on every Python: importing Lava's runtime calls
``multiprocessing.set_start_method('fork')``, which raises ``RuntimeError: context has already
been set`` if anything set a start method before. :func:`import_lava` imports that module
eagerly and turns the failure into a :class:`LavaCompatError` that says what to do.

Lava's runtime, as shipped, cannot be stopped cleanly (measured: Ctrl-C hung 8 of 8 runs) and
never reports an error in one of its OS processes. :func:`import_lava` patches four functions
of ``lava.magma.runtime`` (see :func:`patch_runtime`); :mod:`spikedeploy.runtimes.lava_session`
builds the bounded waits and the teardown on top of them:

- ``SystemProcess.run`` (each child, one per ProcessModel or runtime service): ignores SIGINT
  (Ctrl-C reaches the parent, which ends the children) and takes SIGTERM's default action (an
  inherited Python handler would raise inside the child); an exception is sent to the parent as
  a :class:`ChildError` (picklable, one line) through the pipe Lava already has, and the child
  exits with code 1 without printing a traceback.
- ``runtime.target_fn``: the same, but a failed build is reported as a :class:`ChildError`.
- ``Runtime.initialize``: forks the children with SIGINT/SIGTERM deferred, waits for each
  child's start-up report with a timeout and watches the child meanwhile (Lava waits forever,
  also on a child that died before reporting), labels each child with its Lava process and
  model, and raises :class:`LavaProcessError` naming the child instead of printing the child's
  traceback to stdout.
- ``SharedMemoryManager.start``: its server process takes SIGTERM's default action.

On Linux every child (and the shared-memory server) also ends with its parent (PR_SET_PDEATHSIG),
so even a parent killed outright (SIGKILL, the out-of-memory killer) leaves no Lava process.
"""
from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import importlib.abc
import importlib.machinery
import os
import queue
import re
import signal
import sys
import threading
import traceback
from types import ModuleType
from typing import Iterable, List

from spikedeploy.errors import SpikedeployError

__all__ = ["TARGET_MODULE", "LavaCompatError", "LavaProcessError", "ChildError", "install", "import_lava",
           "patch_source", "patch_runtime", "deferred_signals"]

#: The one module whose source is rewritten before it executes.
TARGET_MODULE = "lava.magma.compiler.var_model"
#: Lava's message infrastructure; importing it sets the multiprocessing start method to 'fork'.
_LAVA_MULTIPROCESSING = "lava.magma.runtime.message_infrastructure.multiprocessing"

INSTALL_HINT = (
    "lava-nc is not installed. spikedeploy's Lava exporter/runtime needs lava-nc 0.10.0, which "
    "declares Python < 3.11, so install it with\n"
    "    pip install --ignore-requires-python --no-deps lava-nc==0.10.0\n"
    "plus the pinned asteval/scipy/scikit-learn/networkx from requirements/lava.txt, "
    "or simply run `make setup` in the spikedeploy repository."
)

# A dataclass field whose default is a shared ByteEncoder instance, e.g.
#     x: ByteEncoder = ByteEncoder()
_DEFAULT_PATTERN = re.compile(
    r"^(?P<head>[ \t]+\w+[ \t]*:[ \t]*ByteEncoder[ \t]*=[ \t]*)ByteEncoder\(\)[ \t]*$", re.MULTILINE
)
_DEFAULT_REPLACEMENT = r"\g<head>field(default_factory=ByteEncoder)"
# The module's own dataclasses import; ``field`` is added to the end of this line.
_IMPORT_PATTERN = re.compile(r"^from dataclasses import [^\n(\\]+$", re.MULTILINE)


class LavaCompatError(RuntimeError):
    """The installed Lava source does not match what this compatibility fix expects."""


def patch_source(source: str, filename: str = TARGET_MODULE) -> str:
    """Return ``source`` (var_model.py) with every ``ByteEncoder()`` field default replaced.

    Raises :class:`LavaCompatError` naming ``filename`` and the expected pattern when there is
    no such default or no single-line ``from dataclasses import ...`` to extend.
    """
    patched, count = _DEFAULT_PATTERN.subn(_DEFAULT_REPLACEMENT, source)
    if count == 0:
        raise LavaCompatError(
            f"{filename}: found no dataclass field defaulting to a shared ByteEncoder instance "
            f"(expected lines matching {_DEFAULT_PATTERN.pattern!r}, as in lava-nc 0.10.0). "
            "This Lava version is not the one spikedeploy was written for; "
            "install lava-nc==0.10.0 or update spikedeploy/lava_compat.py."
        )
    imports = _IMPORT_PATTERN.search(patched)
    if imports is None:
        raise LavaCompatError(
            f"{filename}: found no single-line import matching {_IMPORT_PATTERN.pattern!r} "
            "to which `field` could be added (lava-nc 0.10.0 has "
            "`from dataclasses import dataclass, InitVar`)."
        )
    # Same line, so every later line keeps its number.
    line = imports.group(0)
    return patched[: imports.start()] + f"{line}; from dataclasses import field" + patched[imports.end():]


class _PatchingLoader(importlib.abc.Loader):
    """Executes the patched source of :data:`TARGET_MODULE` under its real file name."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def create_module(self, spec):  # default module creation
        return None

    def exec_module(self, module: ModuleType) -> None:
        with open(self.origin, encoding="utf-8") as handle:
            source = handle.read()
        code = compile(patch_source(source, self.origin), self.origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`TARGET_MODULE` the usual way, then swaps in :class:`_PatchingLoader`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise LavaCompatError(
                f"cannot locate the Python source of {TARGET_MODULE} (spec: {spec!r}); "
                "spikedeploy's Lava fix needs the plain-source lava-nc 0.10.0 package."
            )
        spec.loader = _PatchingLoader(spec.origin)
        return spec


def _require_lava() -> None:
    try:
        import lava  # noqa: F401  (only checks that the distribution is there)
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def install() -> None:
    """Install the import hook (idempotent). Raises ImportError if lava-nc is not installed."""
    _require_lava()
    if not any(isinstance(finder, _VarModelFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _VarModelFinder())


@contextlib.contextmanager
def _tolerate_same_start_method():
    """While Lava's runtime is imported, make ``multiprocessing.set_start_method(m)`` a no-op when
    the start method is already ``m``.

    Lava calls ``set_start_method('fork')`` at import time, which raises if anything fixed a
    start method before, even to 'fork' itself (tqdm does on its first progress bar, e.g. inside
    torch.fx during capture). Asking again for the method already in force changes nothing, so it
    is allowed; asking for a different one still raises, and :func:`import_lava` reports it.
    """
    original = multiprocessing.set_start_method

    def set_start_method(method, force=False):
        if not force and multiprocessing.get_start_method(allow_none=True) == method:
            return None
        return original(method, force=force)

    multiprocessing.set_start_method = set_start_method
    try:
        yield
    finally:
        multiprocessing.set_start_method = original


def import_lava() -> tuple[ModuleType, ModuleType]:
    """Install the hook and import Lava's core; return ``(run_configs, run_conditions)``.

    Also imports the patched :data:`TARGET_MODULE` and Lava's multiprocessing module, so a
    failure of the fix or a start-method clash shows up here rather than later inside Lava.
    """
    install()
    importlib.import_module(TARGET_MODULE)
    try:
        with _tolerate_same_start_method():
            importlib.import_module(_LAVA_MULTIPROCESSING)
    except RuntimeError as exc:
        raise LavaCompatError(
            f"importing {_LAVA_MULTIPROCESSING} failed ({exc}): Lava sets the multiprocessing "
            "start method to 'fork' when its runtime is first imported, so something set a "
            "start method earlier. Call spikedeploy.lava_compat.import_lava() before that code."
        ) from exc
    patch_runtime()
    run_configs = importlib.import_module("lava.magma.core.run_configs")
    run_conditions = importlib.import_module("lava.magma.core.run_conditions")
    return run_configs, run_conditions


# --------------------------------------------------------------------------------------------
# Lava's runtime: quiet children that report their errors, a start-up wait that cannot hang
# --------------------------------------------------------------------------------------------

#: seconds between two looks at a child while waiting for its start-up report
STARTUP_POLL_S = 0.1


class LavaProcessError(SpikedeployError):
    """One of Lava's OS processes failed (an exception in its ProcessModel, or it died).

    ``process`` names the Lava process and its model, ``error`` is the child's one-line
    ``ExcType: message``; ``exit_code`` is the child error's own when it was a
    :class:`~spikedeploy.errors.SpikedeployError` (2 for bad input), else 1."""

    def __init__(self, process: str, error: str, exit_code: int = 1) -> None:
        super().__init__(f"Lava process {process} failed: {error}")
        self.process, self.error, self.exit_code = process, error, int(exit_code)


class ChildError(Exception):
    """What a failed Lava child sends its parent: the original exception as one line of text and
    the exit code it maps to. Always picklable, whatever the original exception was."""

    def __init__(self, summary: str, exit_code: int = 1) -> None:
        super().__init__(summary, exit_code)
        self.summary, self.exit_code = summary, int(exit_code)

    def __str__(self) -> str:
        return self.summary

    @classmethod
    def of(cls, exc: BaseException) -> "ChildError":
        text = " ".join(str(exc).split())
        if len(text) > 500:
            text = text[:497] + "..."
        summary = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        code = exc.exit_code if isinstance(exc, SpikedeployError) else 1
        return cls(summary, code)


@contextlib.contextmanager
def deferred_signals(signums: Iterable[int] = (signal.SIGINT, signal.SIGTERM)):
    """Hold SIGINT/SIGTERM back during the block (cleanup code): a signal that arrives is
    recorded and delivered again, to this process, right after the block, so it has the effect it
    would have had (KeyboardInterrupt, the CLI's SIGTERM exception, or the default action).
    Outside the main thread, where Python cannot change handlers, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = {}

    def record(signum, frame):
        received.append(signum)

    for s in signums:
        handler = signal.getsignal(s)
        if handler in (signal.SIG_IGN, None):  # ignored, or set outside Python: leave it
            continue
        previous[s] = signal.signal(s, record)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(received):
            os.kill(os.getpid(), s)


#: whether the Lava children being forked are forked by the parent's main thread (set in the
#: parent before the forks, read in the children, which inherit it)
_FORKED_BY_MAIN_THREAD = False
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when the thread that forked it ends (prctl PR_SET_PDEATHSIG), so
    that a parent killed outright (SIGKILL, the out-of-memory killer) leaves no Lava process behind.
    Only for children of the main thread, which lives as long as the parent process."""
    if not (_FORKED_BY_MAIN_THREAD and sys.platform.startswith("linux")):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or parent == 1:  # the parent died before prctl took effect
        os._exit(1)


def _child_signals() -> None:
    """In a freshly forked Lava child: Ctrl-C is the parent's to handle; SIGTERM ends the child;
    the child ends with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()


def _system_process_run(self) -> None:
    """``SystemProcess.run`` (in the child): Lava's, with signals set for a child and every
    failure reported to the parent as ``(ChildError, traceback text)`` instead of printed."""
    _child_signals()
    try:
        multiprocessing.Process.run(self)
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which decides)
        try:
            self._cconn.send((ChildError.of(exc), traceback.format_exc()))
        except Exception:  # noqa: BLE001  (the parent is gone: nobody to tell)
            pass
        raise SystemExit(1) from None  # multiprocessing prints nothing for SystemExit(int)
    self._cconn.send(None)


def _target_fn(*args, **kwargs):
    """``lava.magma.runtime.runtime.target_fn`` (in the child): build the actor, report the
    outcome of the build on its queue (a :class:`ChildError` on failure), then run it."""
    builder = kwargs.pop("builder")
    exception_q = kwargs.pop("exception_q")
    try:
        actor = builder.build()
    except Exception as exc:
        exception_q.put(ChildError.of(exc))
        raise
    exception_q.put(None)
    actor.start(*args, **kwargs)


def actor_labels(executable) -> list:
    """One label per Lava child, in the order ``Runtime`` starts them: ``name (Model)`` for each
    Python ProcessModel, then ``runtime service (Class)`` for each runtime service."""
    from lava.magma.compiler.builders.py_builder import PyProcessBuilder

    labels = [f"{proc.name} ({builder.proc_model.__name__})"
              for proc, builder in executable.proc_builders.items() if isinstance(builder, PyProcessBuilder)]
    labels += [f"runtime service ({builder.rs_class.__name__})"
               for builder in (executable.runtime_service_builders or {}).values()]
    return labels


def exit_text(exitcode) -> str:
    """A child's exit status in words."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _startup_report(q, actor, poll: float = STARTUP_POLL_S):
    """The child's start-up report (None or a :class:`ChildError`), watching the child meanwhile."""
    while True:
        try:
            return q.get(timeout=poll)
        except queue.Empty:
            pass
        if actor.exitcode is not None:  # died: its report may still be in the pipe
            try:
                return q.get(timeout=1.0)
            except queue.Empty:
                return ChildError(f"exited during start-up ({exit_text(actor.exitcode)})")


def _runtime_initialize(self, node_cfg_idx: int = 0) -> None:
    """``Runtime.initialize``: Lava's steps, then a bounded wait for every child's start-up.

    The children are forked with SIGINT/SIGTERM held back (:func:`deferred_signals`): a Python
    signal handler that raised inside ``fork``'s Python callbacks would be ignored ("Exception
    ignored in _releaseLock") in the parent, or print a traceback in a child that has not yet set
    its own signals; a signal that arrives meanwhile takes effect right after the forks."""
    global _FORKED_BY_MAIN_THREAD
    _FORKED_BY_MAIN_THREAD = threading.current_thread() is threading.main_thread()
    with deferred_signals():
        self._build_watchdog_manager()
        self._build_message_infrastructure()
        self._build_channels()
        self._build_sync_channels()
        self._build_processes()
        self._build_runtime_services()
        self._start_ports()
    actors = self._messaging_infrastructure.actors
    for actor, label in zip(actors, actor_labels(self._executable)):
        actor.spikedeploy_label = label
    for q, actor in zip(self.exception_q, actors):
        report = _startup_report(q, actor)
        if report is not None:
            raise LavaProcessError(getattr(actor, "spikedeploy_label", "?"), str(report),
                                   getattr(report, "exit_code", 1))
    del self.exception_q
    self.log.debug("Runtime Initialization Complete")
    self._is_initialized = True


def _shared_memory_server_init() -> None:
    """Initializer of the shared-memory manager's server process (multiprocessing already makes it
    ignore SIGINT): SIGTERM ends it, and it ends with its parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()


def _shared_memory_manager_start(self) -> None:
    """Lava's ``SharedMemoryManager.start``, with :func:`_shared_memory_server_init`."""
    self._manager.start(initializer=_shared_memory_server_init)


def patch_runtime() -> None:
    """Install the runtime patches described in the module docstring (idempotent)."""
    mp_module = importlib.import_module(_LAVA_MULTIPROCESSING)
    runtime_module = importlib.import_module("lava.magma.runtime.runtime")
    smm_module = importlib.import_module("lava.magma.runtime.message_infrastructure.shared_memory_manager")
    mp_module.SystemProcess.run = _system_process_run
    runtime_module.target_fn = _target_fn
    runtime_module.Runtime.initialize = _runtime_initialize
    smm_module.SharedMemoryManager.start = _shared_memory_manager_start
