"""Error types. Every error a user can cause derives from :class:`SpikedeployError`; the CLI prints
its message (no traceback) and exits non-zero (2 for unsupported ops / bad input, 1 otherwise)."""

from __future__ import annotations


class SpikedeployError(Exception):
    """Base class: a problem with the user's model, checkpoint, input or options."""

    exit_code = 1


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
