"""Error types. Every error a user can cause derives from :class:`SpikedeployError`; the CLI prints
its message on one line (no traceback) and exits non-zero: 2 for bad input (an unreadable or
malformed file, a bad option, an unsupported op), 1 for a verification that ran and failed or an
internal error.

An IR graph that breaks an invariant is an internal error (:class:`GraphValidationError`, exit 1)
when spikedeploy built it, and bad input when it came from a user's file: artifact loaders
report it as an :class:`ArtifactError` (exit 2).
"""

from __future__ import annotations

import re


class SpikedeployError(Exception):
    """Base class: a problem with the user's model, checkpoint, input or options. Its message is
    always one line (line breaks in the text given are replaced by spaces)."""

    exit_code = 1

    def __str__(self) -> str:
        return re.sub(r"\s*[\r\n]+\s*", " ", super().__str__()).strip()


class CaptureError(SpikedeployError):
    """A module, function or method the capture has no rule for, or a graph it cannot follow."""

    exit_code = 2


class GraphValidationError(SpikedeployError):
    """An IR graph breaks an invariant (dangling input, shape mismatch, cycle, bad parameter)."""


class CheckpointError(SpikedeployError):
    """A checkpoint that cannot be read or does not fit the model."""

    exit_code = 2


class UnsupportedOpError(SpikedeployError):
    """An op that a target or an execution mode cannot express."""

    exit_code = 2


class ConfigError(SpikedeployError):
    """A bad option value (unknown model name, non-integer D, unknown neuron kind, ...)."""

    exit_code = 2


class OutputPathError(SpikedeployError):
    """An output path that exists already, is not writable, or is of the wrong kind."""

    exit_code = 2


class InputError(SpikedeployError):
    """An input file (inputs, a clip, an artifact) that is missing, unreadable or of the wrong shape."""

    exit_code = 2


class ArtifactError(InputError):
    """An exported artifact (ONNX model, NIR file, Lava bundle) that is missing, truncated, foreign
    or inconsistent: the message names the file and the field; the fix is usually to export it
    again (validated before any work starts, :mod:`spikedeploy.validate`)."""

    exit_code = 2


class ResourceError(SpikedeployError):
    """A command whose estimated memory exceeds the limit, refused before it allocates
    (:mod:`spikedeploy.resources`); the message names the estimate, the limit and ``--max-memory``."""

    exit_code = 2
