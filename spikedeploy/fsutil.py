"""Output safety: atomic files and folders, and never a file lost that spikedeploy did not write.

Rules every command follows (``check_output_dir`` / ``atomic_directory``):

- An output folder is written only if it does not exist, is empty, or holds the marker file
  :data:`MARKER` that spikedeploy itself wrote there (its own earlier output), or with an explicit
  ``overwrite=True`` (the CLI's ``--overwrite``).
- A file spikedeploy did not write is never removed. Replacing an earlier output removes only the
  files its marker lists; ``overwrite=True`` on a folder with other files writes the new files
  into it (same names replaced, file by file, atomically) and keeps everything else.
- Inputs of the command that lie inside the output folder are refused, with or without
  ``overwrite``.
- Files are written to a temporary sibling and renamed into place, so a reader never sees a
  half-written file; ``replace=False`` (an export's artifact) refuses an existing path atomically,
  so two exports to one path cannot both succeed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Set, Union

from spikedeploy.errors import OutputPathError, SpikedeployError

PathLike = Union[str, os.PathLike]

#: the marker spikedeploy writes into every output folder: which files it wrote there
MARKER = ".spikedeploy-output.json"

#: the option that lets a command write into a folder holding files spikedeploy did not write
OVERWRITE_HINT = "choose another path, or pass --overwrite to write into it (files of the same names are " \
                 "replaced, other files are kept)"


def _oserror(path: Path, e: OSError) -> OutputPathError:
    return OutputPathError(f"cannot write {path}: {e.strerror or e}")


def _check_parent(path: Path) -> None:
    """Create missing parent directories; fail clearly if the parent cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(f"cannot write {path}: {parent} is not a directory") from None
    except PermissionError:
        raise OutputPathError(f"cannot write {path}: no permission to create {parent}") from None
    except OSError as e:
        raise _oserror(path, e) from None
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


def _no_dangling_link(path: Path, what: str = "output") -> None:
    if os.path.islink(path) and not path.exists():
        raise OutputPathError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                              "remove the link or choose another path")


def _mkstemp(path: Path):
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as e:
        raise _oserror(path, e) from None


def atomic_write_bytes(path: PathLike, data: bytes, *, replace: bool = True) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory, then rename it into
    place. ``replace=False``: an existing ``path`` is an error, checked atomically at the rename
    (a hard link, which fails if the name exists), so concurrent writers cannot both succeed."""
    path = Path(path)
    _no_dangling_link(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is an existing directory")
    if not replace and os.path.lexists(path):
        raise OutputPathError(f"output {path} already exists; choose another path or pass --overwrite")
    _check_parent(path)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _default_mode(Path(tmp), directory=False)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputPathError(f"output {path} was created by another process while this one wrote it; "
                                      "choose another path or pass --overwrite") from None
            os.unlink(tmp)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise _oserror(path, e) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str, *, replace: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), replace=replace)


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing ancestor of ``path``'s parent; raise if it is not a writable directory."""
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise OutputPathError(f"cannot write {path}: {probe} is not a writable directory")
    return probe


def check_output_file(path: PathLike, what: str = "output", *, overwrite: bool = True,
                      inputs: Sequence[Optional[PathLike]] = ()) -> Path:
    """Fail early if ``path`` cannot become an output file: it is a directory or a dangling link,
    no writable directory would hold it, it is one of ``inputs``, or (``overwrite=False``) it
    exists already."""
    path = Path(path)
    _no_dangling_link(path, what)
    if path.is_dir():
        raise OutputPathError(f"cannot write {what} to {path}: it is an existing directory")
    for i in inputs:
        if i is not None and Path(i).exists() and path.exists() and os.path.samefile(i, path):
            raise OutputPathError(f"cannot write {what} to {path}: it is an input of this command; "
                                  "choose another path")
    if not overwrite and os.path.lexists(path):
        raise OutputPathError(f"{what} {path} already exists; choose another path or pass --overwrite")
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


# ---------------------------------------------------------------------------------------------
# output folders and their marker
# ---------------------------------------------------------------------------------------------


def read_marker(path: PathLike) -> Optional[Set[str]]:
    """The relative paths (files and folders) that spikedeploy wrote into the folder ``path``, from
    its marker; None if the folder has no readable marker (then nothing in it is spikedeploy's)."""
    m = Path(path) / MARKER
    if not m.is_file() or m.is_symlink():
        return None
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "spikedeploy" or not isinstance(data.get("files"), list):
        return None
    return {str(f) for f in data["files"] if isinstance(f, str)}


def _tree(root: Path) -> List[str]:
    """Relative paths of everything under ``root`` (folders before their contents); links are
    not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in sorted(dirnames) + sorted(filenames):
            out.append(n if rel == "." else os.path.join(rel, n))
        dirnames.sort()
    return out


def marker_bytes(files: Iterable[str], command: Optional[str] = None) -> bytes:
    from spikedeploy import __version__

    doc = {"tool": "spikedeploy", "version": __version__, "command": command,
           "note": "spikedeploy wrote this folder; it replaces only the files listed here",
           "files": sorted(set(files) - {MARKER})}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def write_marker(path: PathLike, files: Iterable[str], command: Optional[str] = None) -> Path:
    """Record (atomically) that spikedeploy wrote ``files`` (relative paths) into the folder ``path``."""
    return atomic_write_bytes(Path(path) / MARKER, marker_bytes(files, command))


def foreign_entries(path: PathLike, limit: int = 3) -> List[str]:
    """Up to ``limit`` entries of the folder ``path`` that spikedeploy did not write (not in its
    marker; folders that hold only spikedeploy's files are not listed)."""
    path = Path(path)
    ours = read_marker(path) or set()
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(path):
        rel = os.path.relpath(dirpath, path)
        dirnames.sort()
        names = [(n, True) for n in dirnames] + [(n, False) for n in sorted(filenames)]
        for n, is_dir in names:
            r = n if rel == "." else os.path.join(rel, n)
            if r == MARKER or r in ours:
                continue
            full = os.path.join(dirpath, n)
            if is_dir and not os.path.islink(full):
                continue  # a folder counts through its contents
            found.append(r)
            if len(found) >= limit:
                return found
        # a foreign folder that is empty is the user's too
        if rel != "." and rel not in ours and not dirnames and not filenames:
            found.append(rel)
            if len(found) >= limit:
                return found
    return found


def _check_inputs_outside(path: Path, inputs: Sequence[Optional[PathLike]]) -> None:
    out = os.path.realpath(path)
    for i in inputs:
        if i is None:
            continue
        real = os.path.realpath(i)
        if real == out or real.startswith(out.rstrip(os.sep) + os.sep):
            raise OutputPathError(f"input {i} lies inside the output folder {path}; choose an output folder that "
                                  "does not hold the command's inputs")


def check_output_dir(path: PathLike, *, overwrite: bool = False,
                     inputs: Sequence[Optional[PathLike]] = ()) -> Path:
    """Fail early (before any long computation) if ``path`` cannot become an output folder under
    the rules of this module (see the module docstring). ``inputs``: the command's input paths."""
    path = Path(path)
    _no_dangling_link(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"output {path} exists and is not a directory; choose another path")
    _check_inputs_outside(path, inputs)
    if path.is_dir() and not overwrite:
        foreign = foreign_entries(path)
        if foreign:
            raise OutputPathError(f"output folder {path} holds files spikedeploy did not write "
                                  f"({', '.join(foreign)}{', ...' if len(foreign) >= 3 else ''}); {OVERWRITE_HINT}")
    _writable_ancestor(path)
    return path


def _remove_listed(root: Path, listed: Set[str]) -> None:
    """Remove from ``root`` the files of ``listed`` and then the listed folders left empty."""
    for r in sorted(listed, key=lambda s: -s.count(os.sep)):
        p = root / r
        if p.is_symlink() or p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    for r in sorted(listed, key=lambda s: -s.count(os.sep)):
        p = root / r
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.rmdir()  # only if empty: a file someone put there stays


def _merge_into(tmp: Path, path: Path, old_ours: Set[str]) -> List[str]:
    """Move the new tree ``tmp`` into the existing folder ``path`` file by file; remove the
    earlier output's files (``old_ours``) that the new one does not rewrite; keep every other
    file. Everything is checked before the first file moves."""
    new = _tree(tmp)
    for r in new:
        dst = path / r
        src_dir = (tmp / r).is_dir() and not (tmp / r).is_symlink()
        if os.path.lexists(dst):
            dst_dir = dst.is_dir() and not dst.is_symlink()
            if src_dir != dst_dir and r not in old_ours:
                raise OutputPathError(f"cannot write {dst}: a {'folder' if dst_dir else 'file'} of that name exists "
                                      "that spikedeploy did not write; move it or choose another output folder")
    for r in new:
        src, dst = tmp / r, path / r
        if src.is_dir() and not src.is_symlink():
            if os.path.lexists(dst) and not (dst.is_dir() and not dst.is_symlink()):
                dst.unlink()  # ours (checked above)
            dst.mkdir(exist_ok=True)
        else:
            if dst.is_dir() and not dst.is_symlink():
                _remove_listed(dst, {os.path.relpath(x, r) for x in old_ours if x.startswith(r + os.sep)})
                dst.rmdir()  # raises if someone else's file is inside (never removed)
            os.replace(src, dst)
    _remove_listed(path, old_ours - set(new))
    return new


@contextlib.contextmanager
def atomic_directory(path: PathLike, *, overwrite: bool = False, inputs: Sequence[Optional[PathLike]] = (),
                     command: Optional[str] = None, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it becomes ``path``.

    ``path`` absent or empty: the folder is renamed into place (atomic). ``path`` holding an
    earlier spikedeploy output and nothing else: swapped whole, then the old one's files are
    removed. Otherwise (``overwrite=True``, or files added to an earlier output): the new files are
    moved in one by one and the earlier output's files it does not rewrite are removed; files
    spikedeploy did not write are never removed. The marker :data:`MARKER` is written with the
    output. On any error the temporary folder is removed and ``path`` is untouched.

    ``exclusive`` (an export's artifact): without ``overwrite``, ``path`` must not exist, neither
    now nor when the new folder is renamed into place (so of two concurrent writers one fails)."""
    path = Path(path)
    if exclusive and not overwrite and os.path.lexists(path):
        raise OutputPathError(f"output {path} already exists; choose another path or pass --overwrite")
    check_output_dir(path, overwrite=overwrite, inputs=inputs)
    _check_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or "."))
    except OSError as e:
        raise _oserror(path, e) from None
    try:
        _default_mode(tmp, directory=True)
        yield tmp
        (tmp / MARKER).write_bytes(marker_bytes(_tree(tmp), command))
        _commit(tmp, path, overwrite, exclusive and not overwrite)
    except OSError as e:
        raise _oserror(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit(tmp: Path, path: Path, overwrite: bool, exclusive: bool) -> None:
    if not os.path.lexists(path):
        try:
            os.rename(tmp, path)
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if exclusive:
        raise OutputPathError(f"output {path} was created by another process while this one wrote it; "
                              "choose another path or pass --overwrite")
    # the folder exists (or appeared meanwhile): the rules again, on what is there now
    check_output_dir(path, overwrite=overwrite)
    old_ours = read_marker(path) or set()
    if not foreign_entries(path, limit=1):
        if not any(True for _ in os.scandir(path)):
            os.rename(tmp, path)  # onto an empty folder
            return
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent or "."))
        os.rename(path, trash / "old")
        os.rename(tmp, path)
        old = trash / "old"
        _remove_listed(old, old_ours | {MARKER})
        if os.path.lexists(old):
            # someone put a file there between the check and the swap: it is kept, moved back
            _merge_into(old, path, set())
        shutil.rmtree(trash, ignore_errors=True)
        return
    marker = tmp / MARKER
    data = marker.read_bytes()
    marker.unlink()
    _merge_into(tmp, path, old_ours)
    atomic_write_bytes(path / MARKER, data)
