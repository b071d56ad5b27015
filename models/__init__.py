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


def _spiketrack(name: str) -> Callable:
    def build(**kwargs):
        """SpikeTrack ``name`` (official state_dict layout; see ``spikedeploy.models.spiketrack``)."""
        from .spiketrack import spiketrack

        return spiketrack(name, **kwargs)

    return build


def _spiketrack_branch(name: str, branch: str) -> Callable:
    def build(seed: int = 0):
        """One branch of SpikeTrack ``name`` as a single-input model (capture, verify, export, audit)."""
        from .spiketrack import spiketrack_branch

        return spiketrack_branch(name, branch, seed=seed)

    return build


BUILTIN_MODELS: Dict[str, Callable] = {
    "sdt-test": _sdt_test,
}
for _name in (
    "spiketrack-s256-t1", "spiketrack-s256-t3", "spiketrack-b256-t1",
    "spiketrack-b256-t3", "spiketrack-b384-t1", "spiketrack-b384-t3",
    "spiketrack-tiny128-t1", "spiketrack-tiny128-t3",  # small, non-official (trained weights bundled)
):
    BUILTIN_MODELS[_name] = _spiketrack(_name)
    for _branch in ("template", "search"):
        BUILTIN_MODELS[f"{_name}:{_branch}"] = _spiketrack_branch(_name, _branch)


def _spiketrack_event(name: str) -> Callable:
    def build(**kwargs):
        """Event SpikeTrack ``name`` (DI-LIF, MSST; see ``spikedeploy.models.spiketrack_event``)."""
        from .spiketrack_event import spiketrack_event

        return spiketrack_event(name, **kwargs)

    return build


def _spiketrack_event_branch(name: str, branch: str) -> Callable:
    def build(seed: int = 0):
        """One branch of event SpikeTrack ``name`` as a single-input model (search: T frames on the time axis)."""
        from .spiketrack_event import spiketrack_event_branch

        return spiketrack_event_branch(name, branch, seed=seed)

    return build


for _name in ("spiketrack-event-tiny", "spiketrack-event-full"):  # event camera (issue 16)
    if _name in BUILTIN_MODELS:
        raise RuntimeError(f"built-in model {_name!r} registered twice")
    BUILTIN_MODELS[_name] = _spiketrack_event(_name)
    for _branch in ("template", "search"):
        BUILTIN_MODELS[f"{_name}:{_branch}"] = _spiketrack_event_branch(_name, _branch)


def _spikevideoformer(name: str) -> Callable:
    def build(**kwargs):
        """SpikeVideoFormer ``name``, the deployed single-input network (fused RepConvs; options as
        ``SpikeVideoFormerConfig`` fields; see ``spikedeploy.models.spikevideoformer``)."""
        from .spikevideoformer import spikevideoformer_net

        return spikevideoformer_net(name, **kwargs)

    return build


for _name in ("spikevideoformer-tiny", "spikevideoformer-15m", "spikevideoformer-55m"):  # video (issue 17)
    if _name in BUILTIN_MODELS:
        raise RuntimeError(f"built-in model {_name!r} registered twice")
    BUILTIN_MODELS[_name] = _spikevideoformer(_name)


def get_model(name: str, **kwargs):
    """Build the built-in model ``name`` with ``kwargs``; unknown names raise ConfigError."""
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(BUILTIN_MODELS))}")
    return BUILTIN_MODELS[name](**kwargs)
