"""Loading, checking and saving PyTorch checkpoints (state dicts).

Every failure raises :class:`~spikedeploy.errors.CheckpointError` whose message names the file.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from typing import Dict, Optional

import torch
from torch import nn

from spikedeploy.fsutil import atomic_write_bytes
from spikedeploy.errors import CheckpointError

__all__ = ["load_checkpoint", "apply_state_dict", "save_checkpoint"]

_MAX_LISTED = 20  # entries listed per category in a mismatch message


def _listing(items, limit: int = _MAX_LISTED) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


#: how a file written by ``torch.save`` begins: a zip archive, or (before PyTorch 1.6) a pickle
#: stream starting with torch's magic number
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _file_kind(path: str) -> str:
    """"torch" (a zip archive holding a pickle ``data.pkl``, or a legacy torch file), "zip" (another
    zip archive), "damaged-zip" (zip magic but unreadable) or "other"."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError:
        return "other"
    if head.startswith(_LEGACY_MAGIC):
        return "torch"
    if not head.startswith(_ZIP_MAGIC):
        return "other"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "damaged-zip"
    return "torch" if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) else "zip"


def _load_hint(exc: Exception, path: str) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, and what to do. Never
    advises ``weights_only=False`` (that would run the file's pickled code)."""
    kind = _file_kind(path)
    text = " ".join(str(exc).split())
    if kind == "torch" and isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text \
            and ("Unsupported global" in text or "GLOBAL" in text):
        return ("it is a PyTorch checkpoint that holds Python objects besides tensors and plain containers "
                "(e.g. optimizer state or a settings object), which spikedeploy never unpickles; where the file "
                "was made, save the weights alone, e.g. torch.save({'net': model.state_dict()}, path)")
    if kind == "torch":
        detail = "" if isinstance(exc, pickle.UnpicklingError) else f" ({type(exc).__name__}: {text.split('. ')[0][:160]})"
        return f"the PyTorch checkpoint is truncated or corrupt{detail}; copy or save it again"
    if kind == "damaged-zip":
        return "it is a truncated or corrupt zip archive (a torch.save file cut short?); copy or save it again"
    if kind == "zip":
        return "it is a zip archive but not a PyTorch checkpoint (no data.pkl); give a file written by torch.save"
    return "it is not a PyTorch checkpoint (a file written by torch.save); check the path"


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_complex():
        return "complex"
    if t.is_floating_point():
        return "floating"
    return "integer"


def load_checkpoint(
    path, *, key: Optional[str] = None, strip_prefix: Optional[str] = None
) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``path`` with ``torch.load(map_location="cpu", weights_only=True)``.

    ``key`` selects a sub-dict (SpikeTrack checkpoints keep the weights under ``"net"``);
    ``strip_prefix`` removes a prefix (e.g. ``"module."``) from the keys that carry it and keeps
    the others unchanged. Checks that the result is a non-empty dict of tensors without NaN or Inf.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r}: file not found")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r}: is a directory, expected a file")
    # torch warns about odd pickle streams before it fails on them: a refused file gets one line (the
    # error), a loaded one its warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch, zip and pickle raise many types for a bad file
            raise CheckpointError(f"checkpoint {path!r}: cannot be read: {_load_hint(exc, path)}") from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    if key is not None:
        if not isinstance(obj, Mapping):
            raise CheckpointError(
                f"checkpoint {path!r}: key {key!r} requested but the file holds a {type(obj).__name__}, not a dict"
            )
        if key not in obj:
            raise CheckpointError(
                f"checkpoint {path!r}: no key {key!r}; top-level keys: {_listing(map(str, obj.keys()))}"
            )
        obj = obj[key]
        where = f"checkpoint {path!r} [{key!r}]"
    else:
        where = f"checkpoint {path!r}"

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a dict of tensors, found a {type(obj).__name__}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        hint = " (pass key=... to select the state dict)" if len(not_tensors) == len(obj) else ""
        raise CheckpointError(
            f"{where}: expected a dict of tensors; {len(not_tensors)} entries are not tensors: "
            f"{_listing(not_tensors)}{hint}"
        )
    if not obj:
        raise CheckpointError(f"{where}: the state dict is empty")

    state = {}
    for k, v in obj.items():
        k = str(k)
        if strip_prefix and k.startswith(strip_prefix):
            k = k[len(strip_prefix):]
        if k in state:
            raise CheckpointError(f"{where}: key {k!r} appears twice after stripping {strip_prefix!r}")
        state[k] = v

    bad = []
    for k, v in state.items():
        if v.is_floating_point() or v.is_complex():
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad.append(f"{k} ({n} of {v.numel()} values are NaN/Inf)")
    if bad:
        raise CheckpointError(f"{where}: non-finite weights in {len(bad)} tensors: {_listing(bad)}")
    return state


def apply_state_dict(model: nn.Module, state_dict: Mapping, *, source: str = "<checkpoint>") -> None:
    """Load ``state_dict`` into ``model`` strictly.

    On any mismatch raises CheckpointError naming ``source`` and listing every missing key,
    unexpected key, shape conflict (``key: model expects [..], checkpoint has [..]``) and tensor of
    another kind than the model's (floating, integer, bool, complex: e.g. an int64 or complex
    tensor for a float weight, which ``load_state_dict`` would cast silently; float16 for float32
    is the same kind and is accepted), each list truncated to a readable length with its count.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    conflicts = [
        f"{k}: model expects {list(expected[k].shape)}, checkpoint has {list(v.shape)}"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)
    ]
    kinds = [
        f"{k}: model expects {expected[k].dtype} ({_kind(expected[k])}), checkpoint has {v.dtype} ({_kind(v)})"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and _kind(v) != _kind(expected[k])
    ]
    if missing or unexpected or conflicts or kinds:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if conflicts:
            parts.append(f"{len(conflicts)} shape conflicts: {_listing(conflicts)}")
        if kinds:
            parts.append(f"{len(kinds)} tensors of another kind (loading would cast them silently; save the "
                         f"checkpoint with the model's own dtypes): {_listing(kinds)}")
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:  # e.g. dtype that cannot be copied
        raise CheckpointError(f"{source}: cannot load into {type(model).__name__}: {exc}") from exc


def save_checkpoint(state_dict: Mapping, path) -> None:
    """Write ``state_dict`` to ``path`` atomically (temporary file in the same directory, fsync,
    then ``os.replace``), so a crash never leaves a truncated checkpoint behind."""
    buf = io.BytesIO()
    torch.save(dict(state_dict), buf)
    atomic_write_bytes(path, buf.getvalue())
