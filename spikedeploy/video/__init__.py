"""Video tasks: generated motion-classification clips and their folder layout.

- :mod:`.clips` -- :func:`generate_clip` / :func:`generate_clips` (objects cut from real
  photographs moving over photographic backgrounds; disjoint photographs for ``train`` and
  ``test``), :func:`write_clips` / :func:`read_clips` (``labels.csv`` + one ``.npy`` or PNG folder
  per clip) and :func:`clip_tensor` (the network input ``[T, B, 3, H, W]``).

An application package: the core never imports it (``tests/test_layering.py``); it uses the core
and :mod:`spikedeploy.tracking.synth` / :mod:`spikedeploy.tracking.run` (photographs, frame reading).
"""

from spikedeploy.video.clips import (INPUT_MEAN, INPUT_STD, LABELS_FILE, MOTIONS, SPLIT_PHOTOS, SPLITS, ClipRecord,
                                     VideoClip, clip_tensor, generate_clip, generate_clips, read_clips, write_clips)

__all__ = [
    "MOTIONS", "SPLITS", "SPLIT_PHOTOS", "LABELS_FILE", "INPUT_MEAN", "INPUT_STD",
    "VideoClip", "ClipRecord", "generate_clip", "generate_clips", "write_clips", "read_clips", "clip_tensor",
]
