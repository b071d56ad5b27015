"""Loading, checking and saving PyTorch checkpoints (state dicts).

Every failure raises :class:`~spikedeploy.errors.CheckpointError` whose message names the file.
"""

from __future__ import annotations

import io
import os
import pickle
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


def _load_hint(exc: Exception) -> str:
    detail = " ".join(str(exc).split())
    detail = detail.split(". ")[0][:160]
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        return (
            "it stores Python objects other than tensors and plain containers, which "
            "weights_only loading refuses (training checkpoints often hold optimizer stats or "
            "settings objects); if you trust the file, extract the weights once and re-save them, "
            "e.g. torch.save({'net': torch.load(path, weights_only=False)['net']}, new_path)"
        )
    return (
        f"{type(exc).__name__}: {detail}; the file may be truncated or corrupt, "
        "or not a PyTorch checkpoint"
    )


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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch, zip and pickle raise many types for a bad file
        raise CheckpointError(f"checkpoint {path!r}: cannot be read: {_load_hint(exc)}") from exc

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
    unexpected key and shape conflict (``key: model expects [..], checkpoint has [..]``), each list
    truncated to a readable length with its count.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    conflicts = [
        f"{k}: model expects {list(expected[k].shape)}, checkpoint has {list(v.shape)}"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or conflicts:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if conflicts:
            parts.append(f"{len(conflicts)} shape conflicts: {_listing(conflicts)}")
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
