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
"""
from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import importlib.abc
import importlib.machinery
import re
import sys
from types import ModuleType

__all__ = ["TARGET_MODULE", "LavaCompatError", "install", "import_lava", "patch_source"]

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
    run_configs = importlib.import_module("lava.magma.core.run_configs")
    run_conditions = importlib.import_module("lava.magma.core.run_conditions")
    return run_configs, run_conditions
