"""The SpikeTrack tracker: the official inference loop around a pluggable network.

Written from the official tracker's conventions (faicaiwawa/SpikeTrack,
``lib/test/tracker/spiketrack_inf.py``; facts in ``../shared/fixtures/spiketrack/README.md``)::

    from spikedeploy.models.spiketrack import spiketrack
    from spikedeploy.tracking.tracker import SpikeTrackTracker, TorchNetwork, track_sequence

    tracker = SpikeTrackTracker(TorchNetwork(spiketrack("s256", 1, checkpoint="X.pth.tar")))
    tracker.initialize(frames[0], [x, y, w, h])        # HxWx3 uint8 RGB, box in pixels
    result = tracker.track(frames[1])                   # TrackResult: .box [x, y, w, h], .score
    boxes = track_sequence(tracker, frames, init_box, progress=True)   # or all at once

One frame (``track``):

1. HOST :func:`crop_with_context` — a square crop of side ``ceil(sqrt(w h) * 4)`` centred on the
   previous box, zero padded, resized to S x S (:func:`resize_bilinear_u8`, the exact fixed-point
   arithmetic of OpenCV's ``cv2.resize(..., INTER_LINEAR)`` that the official code calls, without
   an OpenCV dependency); ``resize_factor = S / side``.
2. HOST ``normalize_images`` (``(x / 255 - mean) / std``, the model module's function).
3. NETWORK ``search(search [1, 1, 3, S, S], memory)`` -> raw head outputs (see
   :class:`TrackerNetwork`).
4. HOST ``head_maps`` (sigmoid, clamp), Hanning window (``hann_window``), ``decode_boxes`` (argmax,
   offset and size at that cell): box ``(cx, cy, w, h)`` normalized to the crop and the confidence =
   the maximum of the *windowed* score map (the value the official update rule compares).
5. HOST :func:`map_box_back` (``(cx, cy, w, h) * S / resize_factor`` around the previous centre)
   and :func:`clip_box` (inside the frame, 10-pixel margin) -> the new state.
6. Template update (only with T > 1 templates): on every ``update_interval``-th frame whose
   confidence is *strictly greater* than ``update_threshold`` (the official comparison is ``>``),
   the template queue drops its second entry (the first, initial template is fixed), appends a
   crop around the new state, and the NETWORK ``template`` branch rewrites the cached memory.
   Presets: ``"default"`` 25 frames / 0.7, ``"lasot"`` 40 / 0.8 (official, independent of the
   config files).

Initialization: the template crop around the initial box (same factor 4 and size S as the
search region); the queue holds ``T`` copies of it (official ``[template] * num_template``) and
the NETWORK ``template`` branch computes the memory.

Everything except the two NETWORK calls runs on the host (numpy / torch on CPU), so any backend
that implements :class:`TrackerNetwork` (the torch integer model :class:`TorchNetwork`, the
reference interpreter in binary / graded spike mode, onnxruntime, Lava) tracks identically as
long as its head outputs agree.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from spikedeploy.errors import ConfigError, SpikedeployError

__all__ = [
    "bundled_tracker",
    "TrackerError",
    "InvalidBoxError",
    "InvalidFrameError",
    "TrackerStateError",
    "TrackerNetwork",
    "TorchNetwork",
    "TrackResult",
    "SpikeTrackTracker",
    "PRESETS",
    "SEARCH_FACTOR",
    "TEMPLATE_FACTOR",
    "CLIP_MARGIN",
    "crop_with_context",
    "context_crops",
    "resize_bilinear_u8",
    "map_box_back",
    "clip_box",
    "track_sequence",
    "HOST_STEPS",
]

SEARCH_FACTOR = 4.0  #: official ``TEST.SEARCH_FACTOR``: the crop side is 4 x sqrt(w h)
TEMPLATE_FACTOR = 4.0  #: official ``TEST.TEMPLATE_FACTOR`` (templates use the search size S too)
CLIP_MARGIN = 10  #: official ``clip_box(..., margin=10)``

#: update rule per preset: (interval in frames, confidence threshold); official values, hard-coded
#: in the tracker (``'lasot' in dataset_name`` -> 40 / 0.8, otherwise 25 / 0.7)
PRESETS = {"default": (25, 0.7), "lasot": (40, 0.8)}

# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


class TrackerError(SpikedeployError):
    """A problem with the tracker's input or use (bad frame, bad box, wrong call order, a
    network backend that returns the wrong shapes)."""

    exit_code = 2


class InvalidBoxError(TrackerError):
    """The initial box is not 4 finite numbers ``[x, y, w, h]`` with ``w, h > 0`` overlapping
    the frame."""


class InvalidFrameError(TrackerError):
    """A frame that is not an ``H x W x 3`` ``uint8`` RGB array, or whose size differs from the
    first frame's."""


class TrackerStateError(TrackerError):
    """``track`` before ``initialize``."""


# ---------------------------------------------------------------------------------------------
# host: crop and resize (official sample_target + cv2.resize INTER_LINEAR on uint8)
# ---------------------------------------------------------------------------------------------

_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(src: int, dst: int, clamp_low: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per destination index: first source index and the two fixed-point weights, as OpenCV's
    generic resize computes them (``fx = (float)((d + 0.5) * scale - 0.5)`` in float32, weights
    ``saturate_cast<short>((1 - fx) * 2048)`` / ``(fx * 2048)`` rounded half to even). The x axis
    clamps ``sx < 0`` and ``sx >= src - 1`` to a single tap; the y axis only clamps the row index
    (``clamp_low=False``), as in OpenCV."""
    scale = 1.0 / (float(dst) / float(src))  # double, as 1./inv_scale
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_low:
        low = s < 0
        frac[low] = 0.0
        s[low] = 0
        high = s >= src - 1
        frac[high] = 0.0
        s[high] = src - 1
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    return s, w0, w1


def _resize_u8(sample, in_h: int, in_w: int, out_h: int, out_w: int) -> np.ndarray:
    """OpenCV-exact uint8 resize of a virtual ``in_h x in_w x C`` image read through
    ``sample(rows, cols) -> uint8 [len(rows), len(cols), C]``; only the (at most 2 x out) rows
    and columns the interpolation reads are sampled, so a huge zero-padded crop is never built."""
    if (in_h, in_w) == (out_h, out_w):
        return np.ascontiguousarray(sample(np.arange(in_h), np.arange(in_w)))
    scale_x, scale_y = 1.0 / (out_w / in_w), 1.0 / (out_h / in_h)
    eps = np.finfo(float).eps
    if abs(scale_x - 2) < eps and abs(scale_y - 2) < eps:
        # OpenCV switches INTER_LINEAR at exactly 2x down to INTER_AREA fast: (a + b + c + d + 2) >> 2
        img = sample(np.arange(2 * out_h), np.arange(2 * out_w)).astype(np.int32)
        return ((img[0::2, 0::2] + img[0::2, 1::2] + img[1::2, 0::2] + img[1::2, 1::2] + 2) >> 2).astype(np.uint8)
    sx, a0, a1 = _linear_taps(in_w, out_w, clamp_low=True)
    sy, b0, b1 = _linear_taps(in_h, out_h, clamp_low=False)
    cols0, cols1 = sx, np.minimum(sx + 1, in_w - 1)
    rows0, rows1 = np.clip(sy, 0, in_h - 1), np.clip(sy + 1, 0, in_h - 1)
    need_r = np.unique(np.concatenate([rows0, rows1]))
    need_c = np.unique(np.concatenate([cols0, cols1]))
    src = sample(need_r, need_c).astype(np.int64)
    c0, c1 = np.searchsorted(need_c, cols0), np.searchsorted(need_c, cols1)
    horiz = src[:, c0, :] * a0[None, :, None] + src[:, c1, :] * a1[None, :, None]  # 11-bit fixed point
    r0, r1 = np.searchsorted(need_r, rows0), np.searchsorted(need_r, rows1)
    h0 = np.minimum(horiz[r0] >> 4, 32767)  # v_pack: saturate to int16
    h1 = np.minimum(horiz[r1] >> 4, 32767)
    v = ((h0 * b0[:, None, None]) >> 16) + ((h1 * b1[:, None, None]) >> 16)  # v_mul_hi
    return np.clip((v + 2) >> 2, 0, 255).astype(np.uint8)  # v_rshr_pack_u<2>


def resize_bilinear_u8(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """HOST: resize an ``H x W x C`` ``uint8`` image to ``size = (height, width)`` with the exact
    integer arithmetic of OpenCV's ``cv2.resize(img, (width, height))`` (``INTER_LINEAR``, 8-bit,
    SIMD path) — no OpenCV needed:

    * same size: a copy (OpenCV copies);
    * exact 2x downscale: OpenCV switches to ``INTER_AREA`` fast: ``(a + b + c + d + 2) >> 2``;
    * otherwise the generic separable resize: horizontal pass in 11-bit fixed point
      (``S[sx] * a0 + S[sx+1] * a1``), vertical pass as OpenCV's ``VResizeLinearVec_32s8u``:
      ``(((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2) >> 2``, saturated to ``uint8``.

    Not emulated: the dedicated exact-2x *upscale* kernel of the newest OpenCV releases (a crop of
    side S/2 exactly); such crops use the generic path here and may differ by 1 in some pixels."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InvalidFrameError(f"resize_bilinear_u8: expected an H x W x C uint8 image, got {img.dtype} {img.shape}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ConfigError(f"resize_bilinear_u8: output size must be positive, got {size!r}")
    return _resize_u8(lambda r, c: img[np.ix_(r, c)], img.shape[0], img.shape[1], out_h, out_w)


def crop_with_context(frame: np.ndarray, box: Sequence[float], factor: float, output_size: int
                      ) -> Tuple[np.ndarray, float]:
    """HOST: the official ``sample_target``. A square crop of side ``ceil(sqrt(w h) * factor)``
    centred on ``box = [x, y, w, h]``, top-left corner ``round(c - side / 2)`` (Python ``round``),
    zero padding outside the frame, resized to ``output_size`` (:func:`resize_bilinear_u8`).
    The official right/bottom padding is ``x2 - W + 1``: when the crop reaches the right (bottom)
    edge, the frame's last column (row) is replaced by padding; reproduced here. The padded crop
    is never materialized (only the pixels the resize reads are gathered).
    Returns ``(crop [S, S, 3] uint8, resize_factor = S / side)``."""
    x, y, w, h = (float(v) for v in box)
    side = math.ceil(math.sqrt(w * h) * factor)
    if side < 1:
        raise InvalidBoxError(f"box {list(box)} is too small for a crop (side {side} < 1)")
    H, W = frame.shape[:2]
    x1 = round(x + 0.5 * w - side * 0.5)
    y1 = round(y + 0.5 * h - side * 0.5)
    # valid source range; the end is min(x2, W - 1) because of the official "+ 1" padding quirk
    sx0, sx1 = max(x1, 0), min(x1 + side, W - 1)
    sy0, sy1 = max(y1, 0), min(y1 + side, H - 1)

    def sample(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(cols), frame.shape[2]), dtype=np.uint8)
        fr, fc = rows + y1, cols + x1
        vr = (fr >= sy0) & (fr < sy1)
        vc = (fc >= sx0) & (fc < sx1)
        if vr.any() and vc.any():
            out[np.ix_(vr, vc)] = frame[np.ix_(fr[vr], fc[vc])]
        return out

    return _resize_u8(sample, side, side, output_size, output_size), output_size / side


def context_crops(frames: np.ndarray, boxes: np.ndarray, size: int, count: int) -> np.ndarray:
    """HOST: the tracker's normalized search crops (:data:`SEARCH_FACTOR` context, ``size``
    pixels) around the ground-truth ``boxes`` of ``count`` frames spread evenly over ``frames``:
    float32 ``[count, 3, S, S]`` (sample inputs of a branch: verification, calibration)."""
    from spikedeploy.models.spiketrack import normalize_images

    idx = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    crops = [crop_with_context(frames[i], boxes[i].tolist(), SEARCH_FACTOR, size)[0] for i in idx]
    return normalize_images(np.stack(crops)).numpy()


def map_box_back(prev_box: Sequence[float], pred_box: Sequence[float], resize_factor: float, size: int
                 ) -> List[float]:
    """HOST: official ``map_box_back``: ``pred_box = (cx, cy, w, h)`` in crop pixels divided by
    the resize factor (i.e. image-scale lengths relative to the crop's top-left corner), the crop
    centred on ``prev_box`` -> ``[x, y, w, h]`` in the image (Python floats)."""
    cx_prev = prev_box[0] + 0.5 * prev_box[2]
    cy_prev = prev_box[1] + 0.5 * prev_box[3]
    cx, cy, w, h = pred_box
    half_side = 0.5 * size / resize_factor
    cx_real = cx + (cx_prev - half_side)
    cy_real = cy + (cy_prev - half_side)
    return [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]


def clip_box(box: Sequence[float], H: int, W: int, margin: int = CLIP_MARGIN) -> List[float]:
    """HOST: official ``clip_box``: keep ``[x, y, w, h]`` inside the ``H x W`` frame with at least
    ``margin`` pixels of it visible and ``w, h >= margin``."""
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    x1 = min(max(0, x1), W - margin)
    x2 = min(max(margin, x2), W)
    y1 = min(max(0, y1), H - margin)
    y2 = min(max(margin, y2), H)
    return [x1, y1, max(margin, x2 - x1), max(margin, y2 - y1)]


# ---------------------------------------------------------------------------------------------
# the pluggable network
# ---------------------------------------------------------------------------------------------


class TrackerNetwork:
    """The protocol a network backend implements (subclassing is optional; duck typing works).

    Attributes:

    * ``size`` (int): the crop side S (256 or 384).
    * ``templates`` (int): the number of templates T the template branch takes (1 or 3).

    Methods (the only non-host work of the tracker):

    * ``template(templates) -> memory``: ``templates`` is a contiguous float32 CPU ``torch.Tensor``
      ``[T, 1, 3, S, S]`` of *normalized* crops (``normalize_images`` output stacked on a new
      axis 1; index 0 = the initial template). ``memory`` is opaque to the tracker: it is stored
      and passed back to ``search`` unchanged until the next ``template`` call (for the torch
      model the dict ``{"cross_block_k": [T, 1, 8, C_k/8, 4C_k/8]}``; a runtime may return a
      handle, or ``None`` if it keeps the memory itself).
    * ``search(search, memory) -> head``: ``search`` is a float32 CPU tensor ``[1, 1, 3, S, S]``
      (time axis 1, batch 1, normalized). ``head`` is the center head's *raw* outputs: a
      :class:`~spikedeploy.models.spiketrack.HeadOutputs` or any 3-sequence ``(score_logits
      [1, 1, 1, F, F], size_logits [1, 1, 2, F, F], offset [1, 1, 2, F, F])`` of torch tensors or
      numpy arrays (any float dtype; converted to float32), F = S / 16. The leading time axis
      may be omitted (``[1, c, F, F]``). The host applies the sigmoid (``head_maps``).
    * ``close()`` (optional): release what the network keeps running between calls (e.g. a live
      Lava runtime); :func:`spikedeploy.tracking.run.track_clip` calls it after a target's last frame.
    """

    size: int
    templates: int

    def template(self, templates: torch.Tensor) -> Any:  # pragma: no cover - protocol
        raise NotImplementedError

    def search(self, search: torch.Tensor, memory: Any):  # pragma: no cover - protocol
        raise NotImplementedError


class TorchNetwork(TrackerNetwork):
    """:class:`TrackerNetwork` backed by the PyTorch integer model
    (:class:`~spikedeploy.models.spiketrack.SpikeTrack`): ``template_branch`` and
    ``search_branch`` under ``torch.no_grad()`` in eval mode. The tracker's float32 inputs are cast
    to the model's dtype (``TorchNetwork(model.double())`` runs in float64). Other backends (the
    reference in integer/binary/graded mode, onnxruntime) are in :mod:`spikedeploy.tracking.backends`."""

    def __init__(self, model):
        from spikedeploy.models.spiketrack import SpikeTrack

        if not isinstance(model, SpikeTrack):
            raise ConfigError(f"TorchNetwork: expected a SpikeTrack model, got {type(model).__name__}")
        self.model = model.eval()
        self.size = model.config.resolution
        self.templates = model.config.templates

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def template(self, templates: torch.Tensor):
        with torch.no_grad():
            return self.model.template_branch(templates.to(self._dtype()))

    def search(self, search: torch.Tensor, memory):
        with torch.no_grad():
            return self.model.search_branch(search.to(self._dtype()), memory)


# ---------------------------------------------------------------------------------------------
# the tracker
# ---------------------------------------------------------------------------------------------


@dataclass
class TrackResult:
    """One tracked frame.

    ``box``: ``[x, y, w, h]`` in frame pixels (Python floats; the new state). ``score``: the
    confidence = maximum of the windowed score map (compared with the update threshold).
    ``frame_index``: 1 for the first frame after ``initialize``. ``crop_box``: the previous state,
    around which the search crop was taken. ``resize_factor``: S / crop side. ``box_norm``:
    ``(cx, cy, w, h)`` normalized to the crop. ``search_crop``: the ``[S, S, 3]`` uint8 crop.
    ``score_map`` / ``response``: ``[1, 1, F, F]`` float32 tensors before / after the window.
    ``updated``: whether the template queue and memory were rewritten after this frame."""

    box: List[float]
    score: float
    frame_index: int
    crop_box: List[float]
    resize_factor: float
    box_norm: List[float]
    search_crop: np.ndarray = field(repr=False)
    score_map: torch.Tensor = field(repr=False)
    response: torch.Tensor = field(repr=False)
    updated: bool = False


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) or (
        isinstance(v, (np.generic, np.ndarray, torch.Tensor)) and np.ndim(v) == 0 and np.asarray(v).dtype.kind in "iuf"
    )


class SpikeTrackTracker:
    """The official SpikeTrack inference loop (see the module docstring) around ``network``
    (a :class:`TrackerNetwork`, e.g. :class:`TorchNetwork`).

    ``preset``: ``"default"`` (update every 25 frames at confidence > 0.7) or ``"lasot"`` (40 /
    0.8); ``update_interval`` / ``update_threshold`` override the preset (e.g. to exercise the
    update on short sequences). ``window``: multiply the score map by the Hanning window (the
    official tracker always does). Updates happen only with T > 1 templates, as officially.
    """

    def __init__(self, network: TrackerNetwork, *, preset: str = "default", window: bool = True,
                 update_interval: Optional[int] = None, update_threshold: Optional[float] = None):
        from spikedeploy.models.spiketrack import hann_window

        for attr in ("size", "templates", "template", "search"):
            if not hasattr(network, attr):
                raise ConfigError(f"SpikeTrackTracker: the network lacks {attr!r} (see TrackerNetwork)")
        if preset not in PRESETS:
            raise ConfigError(f"SpikeTrackTracker: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        interval, threshold = PRESETS[preset]
        if update_interval is not None:
            if isinstance(update_interval, bool) or not isinstance(update_interval, int) or update_interval < 1:
                raise ConfigError(f"SpikeTrackTracker: update_interval must be a positive int, got {update_interval!r}")
            interval = update_interval
        if update_threshold is not None:
            if not _is_number(update_threshold) or not math.isfinite(float(update_threshold)):
                raise ConfigError(f"SpikeTrackTracker: update_threshold must be a number, got {update_threshold!r}")
            threshold = float(update_threshold)
        self.network = network
        self.size = int(network.size)
        self.num_templates = int(network.templates)
        if self.size % 16 or self.size < 16:
            raise ConfigError(f"SpikeTrackTracker: network.size must be a multiple of 16, got {self.size}")
        if self.num_templates < 1:
            raise ConfigError(f"SpikeTrackTracker: network.templates must be >= 1, got {self.num_templates}")
        self.preset = preset
        self.update_interval = interval
        self.update_threshold = threshold
        self.use_window = bool(window)
        self.feat_size = self.size // 16
        self.window = hann_window(self.feat_size)  # HOST, [1, 1, F, F]
        self.reset()

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the sequence (``initialize`` must be called again)."""
        self.state: Optional[List[float]] = None
        self.frame_index = 0
        self.frame_shape: Optional[Tuple[int, int]] = None
        self.template_crops: List[np.ndarray] = []  # uint8 [S, S, 3], index 0 = initial
        self.template_list: List[torch.Tensor] = []  # normalized [1, 3, S, S]
        self.memory: Any = None
        self.updates: List[int] = []  # frame indices after which the templates were updated

    @property
    def initialized(self) -> bool:
        return self.state is not None

    # -- input checks --------------------------------------------------------------------------

    def _check_frame(self, frame, what: str) -> np.ndarray:
        if isinstance(frame, torch.Tensor):
            raise InvalidFrameError(f"{what}: expected a numpy array H x W x 3 uint8 (RGB), got a torch.Tensor; "
                                    "use tensor.numpy()")
        if not isinstance(frame, np.ndarray):
            raise InvalidFrameError(f"{what}: expected a numpy array H x W x 3 uint8 (RGB), got {type(frame).__name__}")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise InvalidFrameError(f"{what}: expected an H x W x 3 RGB image, got shape {list(frame.shape)}")
        if frame.dtype != np.uint8:
            raise InvalidFrameError(f"{what}: expected dtype uint8 (RGB 0..255), got {frame.dtype}")
        if self.frame_shape is not None and tuple(frame.shape[:2]) != self.frame_shape:
            raise InvalidFrameError(
                f"{what}: frame size {frame.shape[1]}x{frame.shape[0]} (W x H) differs from the first frame's "
                f"{self.frame_shape[1]}x{self.frame_shape[0]}"
            )
        return frame

    @staticmethod
    def _check_box(box, H: int, W: int) -> List[float]:
        if isinstance(box, (str, bytes)) or not isinstance(box, (Sequence, np.ndarray, torch.Tensor)):
            raise InvalidBoxError(f"init box must be [x, y, w, h] (4 numbers), got {box!r}")
        vals = list(np.asarray(box).reshape(-1)) if isinstance(box, (np.ndarray, torch.Tensor)) else list(box)
        if len(vals) != 4 or not all(_is_number(v) for v in vals):
            raise InvalidBoxError(f"init box must be [x, y, w, h] (4 numbers), got {box!r}")
        try:
            x, y, w, h = (float(v) for v in vals)
        except OverflowError:  # an integer too large for a float
            raise InvalidBoxError(f"init box {box!r} has a value too large for a pixel coordinate") from None
        # finite, w, h > 0, at most MAX_BOX_FRAMES frames large, overlapping the frame
        from spikedeploy.validate import check_init_box

        check_init_box(x, y, w, h, H, W, InvalidBoxError)
        return [x, y, w, h]

    # -- network calls -------------------------------------------------------------------------

    def _run_template(self) -> None:
        # [T, 1, 3, S, S], contiguous as the official tracker's: a channels-last stack changes the
        # template branch's float32 rounding (models.spiketrack._contiguous)
        templates = torch.stack(self.template_list, dim=0).contiguous()
        self.memory = self.network.template(templates)

    def _head_maps(self, head):
        from spikedeploy.models.spiketrack import HeadOutputs, head_maps

        if not isinstance(head, (tuple, list)) or len(head) != 3:
            raise TrackerError(f"network.search returned {type(head).__name__}; expected HeadOutputs or "
                               "(score_logits, size_logits, offset)")
        F_ = self.feat_size
        parts = []
        for name, t, c in zip(HeadOutputs._fields, head, (1, 2, 2)):
            t = torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).detach().float().cpu()
            if t.dim() == 4:
                t = t.unsqueeze(0)
            if tuple(t.shape) != (1, 1, c, F_, F_):
                raise TrackerError(f"network.search: {name} has shape {list(t.shape)}, expected [1, 1, {c}, {F_}, {F_}]")
            parts.append(t)
        return head_maps(HeadOutputs(*parts))

    # -- public --------------------------------------------------------------------------------

    def initialize(self, frame: np.ndarray, box: Sequence[float]) -> None:
        """Start a sequence: ``frame`` H x W x 3 uint8 RGB, ``box = [x, y, w, h]`` in pixels
        (w, h > 0, overlapping the frame). Runs the template branch."""
        from spikedeploy.models.spiketrack import normalize_images

        self.reset()
        frame = self._check_frame(frame, "initialize")
        H, W = frame.shape[:2]
        box = self._check_box(box, H, W)
        crop, _ = crop_with_context(frame, box, TEMPLATE_FACTOR, self.size)  # HOST
        template = normalize_images(crop)  # HOST, [1, 3, S, S]
        self.template_crops = [crop] * self.num_templates
        self.template_list = [template] * self.num_templates
        self._run_template()
        self.frame_shape = (H, W)
        self.state = box
        self.frame_index = 0

    def track(self, frame: np.ndarray) -> TrackResult:
        """Track one frame (H x W x 3 uint8 RGB, the size of the first frame) -> :class:`TrackResult`."""
        from spikedeploy.models.spiketrack import decode_boxes, normalize_images

        if not self.initialized:
            raise TrackerStateError("track() before initialize(frame, box)")
        frame = self._check_frame(frame, "track")
        H, W = self.frame_shape
        self.frame_index += 1
        prev = list(self.state)
        crop, resize_factor = crop_with_context(frame, prev, SEARCH_FACTOR, self.size)  # HOST
        search = normalize_images(crop).unsqueeze(0)  # HOST, [1, 1, 3, S, S]
        score_map, size_map, offset_map = self._head_maps(self.network.search(search, self.memory))
        response = self.window * score_map if self.use_window else score_map  # HOST
        boxes, conf = decode_boxes(response, size_map, offset_map)  # HOST
        pred = (boxes.view(-1, 4).mean(dim=0) * self.size / resize_factor).tolist()  # official op order
        self.state = clip_box(map_box_back(prev, pred, resize_factor, self.size), H, W, margin=CLIP_MARGIN)
        score = float(conf.reshape(-1)[0])
        updated = False
        if (self.num_templates > 1 and self.frame_index % self.update_interval == 0
                and score > self.update_threshold):
            z_crop, _ = crop_with_context(frame, self.state, TEMPLATE_FACTOR, self.size)  # HOST
            if len(self.template_list) >= self.num_templates:
                self.template_list.pop(1)
                self.template_crops.pop(1)
            self.template_list.append(normalize_images(z_crop))
            self.template_crops.append(z_crop)
            self._run_template()
            self.updates.append(self.frame_index)
            updated = True
        return TrackResult(
            box=list(self.state), score=score, frame_index=self.frame_index, crop_box=prev,
            resize_factor=resize_factor, box_norm=boxes.view(-1).tolist(), search_crop=crop,
            score_map=score_map, response=response, updated=updated,
        )


def track_sequence(tracker: SpikeTrackTracker, frames: Union[np.ndarray, Iterable[np.ndarray]],
                   init_box: Sequence[float], *, progress: bool = False) -> List[List[float]]:
    """Run ``tracker`` over ``frames`` (an ``N x H x W x 3`` uint8 array or an iterable of
    frames): ``initialize`` on the first, ``track`` on the rest. Returns one ``[x, y, w, h]`` per
    frame, the first being ``init_box`` (as the official tracker reports). ``progress`` shows a
    tqdm bar per frame."""
    from tqdm.auto import tqdm

    total = len(frames) if hasattr(frames, "__len__") else None
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise InvalidFrameError("track_sequence: no frames") from None
    tracker.initialize(first, init_box)
    boxes = [list(tracker.state)]
    with tqdm(it, total=None if total is None else total - 1, desc="track", unit="frame",
              disable=not progress) as bar:
        for frame in bar:
            result = tracker.track(frame)
            boxes.append(result.box)
            bar.set_postfix(score=f"{result.score:.3f}", refresh=False)
    return boxes


#: the tracker's host-side steps, by name (the network's own host parts are in
#: ``spikedeploy.models.spiketrack.HOST_FUNCTIONS``)
HOST_STEPS = {
    "crop_with_context": crop_with_context,
    "resize_bilinear_u8": resize_bilinear_u8,
    "map_box_back": map_box_back,
    "clip_box": clip_box,
}


def bundled_tracker(templates: int = 1, **tracker_kwargs):
    """A ready :class:`SpikeTrackTracker` around the bundled trained model
    (:func:`spikedeploy.models.spiketrack.bundled_model`, PyTorch integer network). ``tracker_kwargs`` go to the tracker
    (``preset``, ``update_interval``, ...)."""
    from spikedeploy.models.spiketrack import bundled_model

    return SpikeTrackTracker(TorchNetwork(bundled_model(templates)), **tracker_kwargs)
