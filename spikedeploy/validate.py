"""Validation at the boundary: every file a user hands to spikedeploy is checked before any work
starts, against the named limits below, and every failure is one line naming the file, the field
and what to do (a :class:`~spikedeploy.errors.SpikedeployError` subclass with exit code 2).

One check per kind of input:

* **arrays read from .npy files** (:func:`read_npy`): the header (dtype, shape, byte order) is
  read and checked before the data is loaded, so a header announcing a huge array is refused
  without allocating it; big-endian data is converted to the native byte order;
* **run inputs** (:func:`check_input_array`, :func:`check_run_input`): real integers or floats
  (no bool, complex, uint64 or long double), every axis non-empty, finite values, at most
  :data:`MAX_INPUT_ELEMENTS` elements;
* **IR graphs carried by artifacts** (:func:`check_graph`, used by the NIR and Lava loaders): the
  type and range of every op field (e.g. a stride of 0), at most :data:`MAX_DIMS` axes and
  :data:`MAX_VALUE_ELEMENTS` elements per value, then the IR invariants
  (:func:`spikedeploy.ir.graph.validate`: order, cycles, arity, shapes, finite parameters);
* **clips and boxes** (:func:`check_clip`, :func:`check_frame_count`, :func:`check_ground_truth`,
  :func:`check_init_box`).

The artifact-specific parts (ONNX metadata, NIR records, Lava bundle descriptions) live next to
their loaders and use the helpers here; the Lava bundle schema is
:mod:`spikedeploy.exporters.lava_validate`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from spikedeploy.errors import ArtifactError, GraphValidationError, InputError, SpikedeployError

# ---------------------------------------------------------------------------------------------
# named limits
# ---------------------------------------------------------------------------------------------

#: axes of one value (per-step IR shapes, stored arrays) and of an input file ([T, B, *s])
MAX_DIMS = 8
#: size of one axis
MAX_DIM_SIZE = 1 << 24
#: elements of one per-step IR value (float64: 512 MiB); SpikeTrack-B384's largest is ~1e6
MAX_VALUE_ELEMENTS = 1 << 26
#: elements of one stored parameter array (an unrolled sparse synapse can be large)
MAX_ARRAY_ELEMENTS = 1 << 28
#: elements of one input array [T, B, *s] (float64: 2 GiB)
MAX_INPUT_ELEMENTS = 1 << 28
#: nodes of an IR graph read from an artifact
MAX_GRAPH_NODES = 100_000
#: macro-steps T of a time axis
MAX_TIMESTEPS = 100_000
#: bytes of one artifact file (ONNX model, NIR file, Lava arrays)
MAX_ARTIFACT_BYTES = 8 << 30
#: frames of a clip and rows of a ground-truth file
MAX_CLIP_FRAMES = 100_000
#: width and height of a frame in pixels
MAX_FRAME_SIDE = 16_384
#: bytes of a whole clip (N x H x W x 3 uint8)
MAX_CLIP_BYTES = 8 << 30
#: an initial box may be at most this many frame widths wide (heights high)
MAX_BOX_FRAMES = 2.0
#: |coordinate| of a ground-truth box in pixels
MAX_BOX_COORD = 1e7
#: characters of a third-party error message quoted in one of ours
MAX_DETAIL_CHARS = 200

#: dtypes accepted for run inputs: real integers and floats that float64 holds (uint64 does not:
#: values above 2**63 have no torch dtype; long double has no torch dtype either)
INPUT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float16", "float32", "float64")


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------


def one_line(text: str, limit: Optional[int] = None) -> str:
    """``text`` on one line (every run of whitespace holding a line break becomes one space),
    cut to ``limit`` characters."""
    s = re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()
    if limit is not None and len(s) > limit:
        s = s[: limit - 3].rstrip() + "..."
    return s


def detail(exc: BaseException) -> str:
    """A short one-line description of a third-party exception (type and first words)."""
    msg = one_line(str(exc), MAX_DETAIL_CHARS)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def describe(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (values from files can be huge)."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _fail(error: type, where: str, field: Optional[str], problem: str, todo: str):
    at = f"{where}: {field}: " if field else f"{where}: "
    return error(one_line(f"{at}{problem}" + (f"; {todo}" if todo else "")))


# ---------------------------------------------------------------------------------------------
# scalar fields (JSON values)
# ---------------------------------------------------------------------------------------------


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v) -> bool:
    return isinstance(v, (numbers.Real, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


class FieldChecker:
    """Checks of JSON-like fields with messages ``<where>: <field>: <problem>; <todo>``.

    ``error`` is the error class raised (default :class:`ArtifactError`), ``todo`` the advice
    appended to every message (e.g. "re-export the bundle")."""

    def __init__(self, where: str, todo: str = "", error: type = ArtifactError):
        self.where, self.todo, self.error = where, todo, error

    def fail(self, field: Optional[str], problem: str):
        raise _fail(self.error, self.where, field, problem, self.todo)

    def int(self, v, field: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
        if not is_int(v):
            self.fail(field, f"expected an integer, got {describe(v)}")
        v = int(v)
        if lo is not None and v < lo:
            self.fail(field, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            self.fail(field, f"must be <= {hi}, got {v}")
        return v

    def opt_int(self, v, field: str, lo: Optional[int] = None, hi: Optional[int] = None) -> Optional[int]:
        return None if v is None else self.int(v, field, lo, hi)

    def number(self, v, field: str, *, positive: bool = False, lo: Optional[float] = None) -> float:
        if not is_real(v):
            self.fail(field, f"expected a number, got {describe(v)}")
        v = float(v)
        if not math.isfinite(v):
            self.fail(field, f"must be finite, got {v}")
        if positive and v <= 0:
            self.fail(field, f"must be > 0, got {v}")
        if lo is not None and v < lo:
            self.fail(field, f"must be >= {lo}, got {v}")
        return v

    def str(self, v, field: str, choices: Optional[Sequence[str]] = None) -> str:
        if not isinstance(v, str):
            self.fail(field, f"expected a string, got {describe(v)}")
        if choices is not None and v not in choices:
            self.fail(field, f"unknown value {describe(v)}; expected one of {', '.join(map(str, choices))}")
        return v

    def bool(self, v, field: str) -> bool:
        if not isinstance(v, (bool, np.bool_)):
            self.fail(field, f"expected true or false, got {describe(v)}")
        return bool(v)

    def list(self, v, field: str, max_len: Optional[int] = None, min_len: int = 0) -> list:
        if not isinstance(v, (list, tuple)):
            self.fail(field, f"expected a list, got {describe(v)}")
        if len(v) < min_len:
            self.fail(field, f"expected at least {min_len} entries, got {len(v)}")
        if max_len is not None and len(v) > max_len:
            self.fail(field, f"expected at most {max_len} entries, got {len(v)}")
        return list(v)

    def dict(self, v, field: str) -> dict:
        if not isinstance(v, dict):
            self.fail(field, f"expected an object, got {describe(v)}")
        return v

    def key(self, d: dict, k: str, field: str):
        if k not in d:
            self.fail(f"{field}.{k}" if field else k, "missing")
        return d[k]

    def shape(self, v, field: str, *, min_dims: int = 1, max_dims: int = MAX_DIMS,
              max_elements: int = MAX_VALUE_ELEMENTS) -> Tuple[int, ...]:
        dims = self.list(v, field)
        if not min_dims <= len(dims) <= max_dims:
            self.fail(field, f"expected {min_dims} to {max_dims} dimensions, got {len(dims)}")
        out = tuple(self.int(d, f"{field}[{i}]", 1, MAX_DIM_SIZE) for i, d in enumerate(dims))
        n = math.prod(out)
        if n > max_elements:
            self.fail(field, f"shape {list(out)} has {n} elements, more than the limit {max_elements}")
        return out


# ---------------------------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------------------------


def check_array(a, where: str, field: str, *, kinds: str = "f", ndim: Optional[int] = None,
                shape: Optional[Tuple[int, ...]] = None, finite: bool = True,
                max_elements: int = MAX_ARRAY_ELEMENTS, todo: str = "", error: type = ArtifactError) -> np.ndarray:
    """A stored array: a numpy array of a dtype kind in ``kinds`` ("f" float, "i" signed, "u"
    unsigned), optional exact ``ndim``/``shape``, at most ``max_elements`` elements and (floats)
    finite values. Returns it in the native byte order."""
    c = FieldChecker(where, todo, error)
    if not isinstance(a, np.ndarray):
        c.fail(field, f"expected an array, got {type(a).__name__}")
    if a.dtype.kind not in kinds or a.dtype.kind == "f" and a.dtype.itemsize > 8:
        want = {"f": "a float", "iu": "an integer", "i": "a signed integer", "u": "an unsigned integer"}.get(
            kinds, "a real number (float or integer)")
        c.fail(field, f"dtype {a.dtype} is not {want} type")
    if a.ndim > MAX_DIMS:
        c.fail(field, f"has {a.ndim} dimensions, more than the limit {MAX_DIMS}")
    if a.size > max_elements:
        c.fail(field, f"has {a.size} elements, more than the limit {max_elements}")
    if ndim is not None and a.ndim != ndim:
        c.fail(field, f"expected {ndim} dimensions, got shape {list(a.shape)}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        c.fail(field, f"expected shape {list(shape)}, got {list(a.shape)}")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if finite and a.dtype.kind == "f":
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            c.fail(field, f"has {bad} NaN/Inf value(s)")
    return a


# ---------------------------------------------------------------------------------------------
# .npy files
# ---------------------------------------------------------------------------------------------


def read_npy(path, what: str, *, max_elements: int, max_bytes: Optional[int] = None,
             error: type = InputError) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` (no pickles). Its header is read and checked first
    (a plain, non-structured dtype; at most :data:`MAX_DIMS` axes, ``max_elements`` elements and
    ``max_bytes`` bytes of data (default 8 per element); the file long enough for the data it
    announces), then the data; non-native byte order is converted. ``what`` names the file in
    messages ("input file", "clip", ...)."""
    path = Path(path)
    where = f"{what} {path}"
    if not path.exists():
        raise error(f"{where} does not exist")
    if not path.is_file():
        raise error(f"{where} is not a file")
    try:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
            except (ValueError, EOFError, SyntaxError, TypeError) as e:
                if path.stat().st_size == 0:
                    raise error(f"{where} is empty (0 bytes); give a .npy file written by numpy.save") from None
                raise error(one_line(f"cannot read {where} as .npy (is it a file written by numpy.save?): "
                                     f"{detail(e)}")) from None
            header_end = f.tell()
    except OSError as e:
        raise error(one_line(f"cannot read {where}: {e.strerror or e}")) from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"{where} holds a {dtype} array (objects or records); give a plain numeric array")
    if len(shape) > MAX_DIMS:
        raise error(f"{where} has {len(shape)} dimensions, more than the limit {MAX_DIMS}")
    n = math.prod(shape)
    if n > max_elements:
        raise error(f"{where} holds {n} elements {list(shape)}, more than the limit {max_elements}")
    limit = 8 * max_elements if max_bytes is None else max_bytes
    if n * dtype.itemsize > limit:
        raise error(f"{where} holds {n * dtype.itemsize} bytes of {dtype} {list(shape)}, more than the limit {limit}")
    need = header_end + n * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise error(f"{where} is truncated: its header announces {dtype} {list(shape)} ({need} bytes) but the file "
                    f"has {size} bytes")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise error(one_line(f"cannot read {where} as .npy: {detail(e)}")) from None
    if not isinstance(arr, np.ndarray):  # pragma: no cover - the header said .npy
        raise error(f"{where} is not a single .npy array")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


# ---------------------------------------------------------------------------------------------
# run inputs
# ---------------------------------------------------------------------------------------------


def check_input_array(arr: np.ndarray, where: str, *, min_dims: int = 3,
                      max_elements: int = MAX_INPUT_ELEMENTS) -> np.ndarray:
    """Run inputs ``[T, B, *s]``: a real integer or float dtype of :data:`INPUT_DTYPES`, at least
    ``min_dims`` axes, none of them empty, finite values. Returns the array in native byte order."""
    if arr.dtype.name not in INPUT_DTYPES:
        kind = {"b": "boolean", "c": "complex", "U": "text", "S": "bytes", "M": "datetime", "m": "timedelta",
                "O": "object", "V": "record"}.get(arr.dtype.kind, str(arr.dtype))
        raise InputError(f"{where}: dtype {arr.dtype} ({kind}) is not accepted; inputs are real numbers: give them "
                         f"as float32/float64 (or an integer type of up to 32 bits)")
    if not min_dims <= arr.ndim <= MAX_DIMS:
        raise InputError(f"{where}: expected an array [T, B, *input_shape] with {min_dims} to {MAX_DIMS} axes, got "
                         f"shape {list(arr.shape)}")
    empty = [i for i, n in enumerate(arr.shape) if n == 0]
    if empty:
        axis = {0: "the time axis T (axis 0)", 1: "the batch axis B (axis 1)"}.get(empty[0], f"axis {empty[0]}")
        raise InputError(f"{where}: {axis} is empty (shape {list(arr.shape)}); give at least one step and one sample")
    if arr.size > max_elements:
        raise InputError(f"{where}: {arr.size} elements {list(arr.shape)}, more than the limit {max_elements}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{where}: contains {bad} NaN or Inf value(s); inputs must be finite")
    return arr


def check_run_input(x, where: str, shape: Sequence[int], *, steps: Optional[int] = None,
                    step_hint: str = "") -> np.ndarray:
    """One run input (a tensor or array) for a graph input of per-step ``shape``: the checks of
    :func:`check_input_array` plus the shape ``[T, B, *shape]`` (``steps``: the T it must have).
    Returns a numpy array (native byte order)."""
    import torch

    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise InputError(f"{where}: dtype {x.dtype} is not accepted; inputs are real numbers (float or int)")
        arr = x.detach().cpu().numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise InputError(one_line(f"{where}: not an array ({detail(e)})")) from None
    want = tuple(int(s) for s in shape)
    if arr.ndim != len(want) + 2 or tuple(arr.shape[2:]) != want:
        raise InputError(f"{where} must have shape [T, B, {', '.join(map(str, want))}], got {list(arr.shape)}")
    arr = check_input_array(arr, where)
    if steps is not None and arr.shape[0] != int(steps):
        raise InputError(f"{where} has T={arr.shape[0]} time steps, but {step_hint or f'the graph needs T={steps}'}")
    return arr


# ---------------------------------------------------------------------------------------------
# IR graphs read from artifacts
# ---------------------------------------------------------------------------------------------

#: op fields that must be >= 1 (ints or tuples of ints), and >= 0
_POSITIVE_FIELDS = {"stride", "dilation", "kernel", "groups", "num_heads", "times", "d", "d_init", "size", "shape"}
_NONNEGATIVE_FIELDS = {"padding", "step", "axes", "perm", "axis"}


def _check_value(c: FieldChecker, field: str, ann: str, v) -> None:
    """Type and range of one op field from its annotation (``from __future__`` strings)."""
    ann = ann.replace(" ", "")
    optional = ann.startswith("Optional[") or ann.startswith("Union[None,")
    if optional and v is None:
        return
    base = ann[len("Optional["):-1] if ann.startswith("Optional[") else ann
    lo = 1 if field in _POSITIVE_FIELDS else 0 if field in _NONNEGATIVE_FIELDS else None
    if base.startswith("Union[None,"):  # e.g. the leak: None, a number or one per step
        if isinstance(v, tuple):
            c.list(v, field, max_len=MAX_TIMESTEPS)
            for i, x in enumerate(v):
                c.number(x, f"{field}[{i}]")
        else:
            c.number(v, field)
        return
    if base == "int":
        c.int(v, field, lo, MAX_DIM_SIZE)
    elif base == "float":
        c.number(v, field)
    elif base == "bool":
        c.bool(v, field)
    elif base == "str":
        c.str(v, field)
    elif base == "np.ndarray":
        if not isinstance(v, np.ndarray):
            c.fail(field, f"expected an array, got {describe(v)}")
        check_array(v, c.where, field, todo=c.todo)
    elif base.startswith("Tuple[int") or base == "Shape":
        items = c.list(v, field, max_len=MAX_DIMS)
        n = {"Tuple[int,int]": 2}.get(base)
        if n is not None and len(items) != n:
            c.fail(field, f"expected {n} integers, got {describe(v)}")
        for i, x in enumerate(items):
            c.int(x, f"{field}[{i}]", lo, MAX_DIM_SIZE)


def check_op_fields(node, where: str, todo: str = "") -> None:
    """Type and range of every field of ``node.op`` (what the op's own constructor does not
    check: e.g. a stride of 0, a string where a number belongs, a negative padding)."""
    op = node.op
    c = FieldChecker(f"{where}: node {node.name!r} ({type(op).__name__})", todo)
    for f in dataclasses.fields(op):
        _check_value(c, f.name, str(f.type), getattr(op, f.name))
    if type(op).__name__ == "BatchNorm":
        if float(op.eps) < 0 or np.any(np.asarray(op.var) + float(op.eps) <= 0):
            c.fail("var", "var + eps must be > 0 in every channel")
    if type(op).__name__ == "Concat" and int(op.axis) >= MAX_DIMS:
        c.fail("axis", f"must be < {MAX_DIMS}, got {op.axis}")


def check_graph(graph, where: str, todo: str = "") -> Dict[str, Tuple[int, ...]]:
    """Validate an IR graph rebuilt from an artifact (``where`` names the file): limits (nodes,
    axes, elements per value, array sizes), the type and range of every op field, every node's
    shape inference (any failure names the node), then the IR invariants. Raises
    :class:`ArtifactError`; returns the per-step shape of every value."""
    from spikedeploy.ir.graph import validate

    c = FieldChecker(where, todo)
    if len(graph.nodes) > MAX_GRAPH_NODES:
        c.fail("nodes", f"{len(graph.nodes)} nodes, more than the limit {MAX_GRAPH_NODES}")
    if not graph.inputs:
        c.fail("inputs", "the graph has no inputs")
    shapes: Dict[str, Tuple[int, ...]] = {}
    for spec in graph.inputs:
        if not isinstance(spec.name, str) or not spec.name:
            c.fail("inputs", f"bad input name {describe(spec.name)}")
        shapes[spec.name] = c.shape(list(spec.shape), f"input {spec.name!r} shape")
        if spec.steps is not None:
            c.int(spec.steps, f"input {spec.name!r} steps", 1, MAX_TIMESTEPS)
    for node in graph.nodes:
        if not isinstance(node.name, str) or not node.name:
            c.fail("nodes", f"bad node name {describe(node.name)}")
        if not isinstance(node.inputs, tuple) or not all(isinstance(i, str) for i in node.inputs):
            c.fail(f"node {node.name!r} inputs", f"expected a list of value names, got {describe(node.inputs)}")
        check_op_fields(node, where, todo)
    for node in graph.nodes:  # shape inference, each failure naming the node
        if node.name in shapes or not all(i in shapes for i in node.inputs):
            break  # validate() below names the problem (duplicate, cycle, missing value)
        arity = type(node.op).arity
        if (arity is None and not node.inputs) or (arity is not None and len(node.inputs) != arity):
            break
        try:
            out = tuple(int(d) for d in node.op.infer_shape(*(shapes[i] for i in node.inputs)))
        except ValueError:
            break  # validate() reports it with the op's own reason
        except Exception as e:  # malformed parameters the op does not check itself
            c.fail(f"node {node.name!r} ({type(node.op).__name__})", f"malformed parameters ({detail(e)})")
        if len(out) > MAX_DIMS or math.prod(out) > MAX_VALUE_ELEMENTS:
            c.fail(f"node {node.name!r} ({type(node.op).__name__})",
                   f"its output {list(out)} is larger than the limits ({MAX_DIMS} axes, {MAX_VALUE_ELEMENTS} elements)")
        shapes[node.name] = out
    try:
        return validate(graph)
    except GraphValidationError as e:
        raise _fail(ArtifactError, where, None, f"invalid graph: {e}", todo) from None
    except SpikedeployError:
        raise
    except Exception as e:  # an op whose steps or shapes cannot be inferred from bad fields
        raise _fail(ArtifactError, where, None, f"invalid graph ({detail(e)})", todo) from None


# ---------------------------------------------------------------------------------------------
# artifact files
# ---------------------------------------------------------------------------------------------


def check_artifact_file(path, what: str, *, max_bytes: int = MAX_ARTIFACT_BYTES) -> Path:
    """An existing, non-empty regular file of at most ``max_bytes`` bytes (``what`` names the
    kind, e.g. "ONNX model")."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{what} {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise ArtifactError(f"{what} {path} is empty (0 bytes); export it again")
    if size > max_bytes:
        raise ArtifactError(f"{what} {path} has {size} bytes, more than the limit {max_bytes}")
    return path


# ---------------------------------------------------------------------------------------------
# clips and boxes
# ---------------------------------------------------------------------------------------------


def check_clip(frames: np.ndarray, where: str) -> np.ndarray:
    """A clip array: ``N x H x W x 3`` uint8, 1 <= N <= :data:`MAX_CLIP_FRAMES`, H and W between 1
    and :data:`MAX_FRAME_SIDE`."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{where} must be an N x H x W x 3 uint8 array (RGB frames), got {frames.dtype} "
                         f"{list(frames.shape)}")
    n, h, w = frames.shape[:3]
    if n < 1:
        raise InputError(f"{where} holds no frames (shape {list(frames.shape)}); give at least one frame")
    check_frame_count(n, where)
    check_frame_size(h, w, where)
    return frames


def check_frame_count(n: int, where: str) -> None:
    if n > MAX_CLIP_FRAMES:
        raise InputError(f"{where} has {n} frames, more than the limit {MAX_CLIP_FRAMES}; split the clip")


def check_frame_size(h: int, w: int, where: str, frames: int = 1) -> None:
    """Frame size limits (and the whole clip's bytes, ``frames`` of them)."""
    if not (1 <= h <= MAX_FRAME_SIDE and 1 <= w <= MAX_FRAME_SIDE):
        raise InputError(f"{where}: frames of {w}x{h} pixels (W x H); each side must be 1 to {MAX_FRAME_SIDE}")
    if frames * h * w * 3 > MAX_CLIP_BYTES:
        raise InputError(f"{where}: {frames} frames of {w}x{h} pixels need {frames * h * w * 3} bytes, more than the "
                         f"limit {MAX_CLIP_BYTES}; shorten or downscale the clip")


def check_ground_truth(boxes: np.ndarray, where: str) -> np.ndarray:
    """Ground-truth boxes ``[N, 4]`` (x, y, w, h): real numbers; a row may be all NaN or have
    w, h <= 0 (an absent target, as in OTB/LaSOT files), but not +-Inf or coordinates beyond
    :data:`MAX_BOX_COORD`. Returns float64."""
    if boxes.dtype.kind not in "iuf":
        raise InputError(f"{where}: dtype {boxes.dtype} is not accepted; boxes are real numbers x, y, w, h")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"{where} must hold one x, y, w, h box per frame (N x 4), got shape {list(boxes.shape)}")
    if len(boxes) < 1:
        raise InputError(f"{where} holds no boxes; give one x, y, w, h row per frame")
    if len(boxes) > MAX_CLIP_FRAMES:
        raise InputError(f"{where} has {len(boxes)} boxes, more than the limit {MAX_CLIP_FRAMES}")
    boxes = np.asarray(boxes, dtype=np.float64)
    inf = np.isinf(boxes).any(axis=1)
    if inf.any():
        row = int(np.flatnonzero(inf)[0])
        raise InputError(f"{where}: row {row + 1} ({boxes[row].tolist()}) has an infinite value; mark an absent "
                         "target with NaN or a size <= 0")
    big = (np.abs(np.nan_to_num(boxes)) > MAX_BOX_COORD).any(axis=1)
    if big.any():
        row = int(np.flatnonzero(big)[0])
        raise InputError(f"{where}: row {row + 1} ({boxes[row].tolist()}) has a coordinate beyond +-{MAX_BOX_COORD:g} "
                         "pixels")
    return boxes


def check_init_box(x: float, y: float, w: float, h: float, H: int, W: int, error: type) -> None:
    """An initial box ``[x, y, w, h]`` for a ``W x H`` frame: finite, w and h > 0, overlapping the
    frame, and at most :data:`MAX_BOX_FRAMES` frame widths wide and heights high."""
    box = [x, y, w, h]
    if not all(math.isfinite(v) for v in box):
        raise error(f"init box {box} has a non-finite value")
    if w <= 0 or h <= 0:
        raise error(f"init box {box}: width and height must be > 0")
    if w > MAX_BOX_FRAMES * W or h > MAX_BOX_FRAMES * H:
        raise error(f"init box {box} is larger than {MAX_BOX_FRAMES:g}x the {W}x{H} (W x H) frame; give the "
                    "target's box in pixels of the first frame")
    if x >= W or y >= H or x + w <= 0 or y + h <= 0:
        raise error(f"init box {box} lies outside the {W}x{H} (W x H) frame")

