"""Atomic file output: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from spikedeploy.errors import OutputPathError, SpikedeployError

PathLike = Union[str, os.PathLike]


def _check_parent(path: Path) -> None:
    """Create missing parent directories; fail clearly if the parent cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(f"cannot write {path}: {parent} is not a directory") from None
    except PermissionError:
        raise OutputPathError(f"cannot write {path}: no permission to create {parent}") from None
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot write {path}: directory {parent} is not writable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, directory: bool) -> None:
    """Give a temporary file/directory the permissions a plain open()/mkdir() would have had
    (mkstemp/mkdtemp create them owner-only)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _default_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing ancestor of ``path``'s parent; raise if it is not a writable directory."""
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise OutputPathError(f"cannot write {path}: {probe} is not a writable directory")
    return probe


def check_output_file(path: PathLike, what: str = "output") -> Path:
    """Fail early if ``path`` cannot become an output file (it is a directory, or no writable
    directory would hold it)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {what} to {path}: it is an existing directory")
    _writable_ancestor(path)
    return path


def require_file(path: PathLike, what: str) -> Path:
    """An existing regular file, or an error naming ``what`` (e.g. "ONNX model") and the path."""
    path = Path(path)
    if not path.exists():
        raise SpikedeployError(f"{what} {path} does not exist")
    if not path.is_file():
        raise SpikedeployError(f"{what} {path} is not a file")
    return path


def check_output_dir(path: PathLike, *, overwrite: bool = True) -> Path:
    """Fail early (before any long computation) if ``path`` cannot become an output directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"output {path} exists and is not a directory")
    if path.exists() and not overwrite:
        raise OutputPathError(f"output {path} already exists; choose another path or pass --overwrite")
    _writable_ancestor(path)
    return path


@contextlib.contextmanager
def atomic_directory(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it is renamed to ``path``.

    On any error the temporary directory is removed and ``path`` is untouched. An existing ``path``
    is an error unless ``overwrite`` (then it is replaced only after the new one is complete)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputPathError(f"output {path} already exists; choose another path or pass --overwrite")
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"output {path} exists and is not a directory")
    _check_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or "."))
    try:
        _default_mode(tmp, directory=True)
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent or "."))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
