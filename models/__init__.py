"""Built-in reference models (installed as ``spikedeploy.models``).

Kept light: the model modules (and torch) are imported only when a model is built.
"""

from __future__ import annotations

from typing import Callable, Dict

from spikedeploy.errors import ConfigError

__all__ = ["BUILTIN_MODELS", "get_model"]


def _sdt_test(**kwargs):
    """``SDTTestNet`` (pass ``neuron=<kind>`` and other constructor options as keywords)."""
    from .sdt_test import SDTTestNet

    return SDTTestNet(**kwargs)


BUILTIN_MODELS: Dict[str, Callable] = {
    "sdt-test": _sdt_test,
}


def get_model(name: str, **kwargs):
    """Build the built-in model ``name`` with ``kwargs``; unknown names raise ConfigError."""
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(BUILTIN_MODELS))}")
    return BUILTIN_MODELS[name](**kwargs)
