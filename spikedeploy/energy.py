"""Energy profiles: per-operation energies that turn op counts into picojoules.

    energy = E_AC * SynOps + E_MAC * MACs (+ E_neuron * neuron updates, if the profile has it)

* ``SynOps`` — accumulates caused by unit spikes (design notes §6), the spike-driven part;
* ``MACs`` — multiply-accumulates on real-valued inputs (the first layer on pixels, host ops);
* ``neuron updates`` — state updates per neuron per step (only hardware profiles charge them).

Profiles are registered by name (:func:`register_profile`, duplicates rejected) and looked up with
:func:`get_profile`; an unknown name is a :class:`~spikedeploy.errors.ConfigError` that lists the
known ones. Every profile carries the citation of its numbers; reports print it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from spikedeploy.errors import ConfigError

__all__ = ["EnergyProfile", "PROFILES", "DEFAULT_PROFILE", "register_profile", "get_profile", "profile_names"]


@dataclass(frozen=True)
class EnergyProfile:
    """Per-operation energies in picojoules and where they come from."""

    name: str
    e_ac_pj: float  #: one accumulate (one SynOp)
    e_mac_pj: float  #: one multiply-accumulate on real values
    e_neuron_pj: Optional[float] = None  #: one neuron state update (None: not charged)
    citation: str = ""
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"energy profile needs a non-empty name, got {self.name!r}")
        for f in ("e_ac_pj", "e_mac_pj") + (("e_neuron_pj",) if self.e_neuron_pj is not None else ()):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"energy profile {self.name!r}: {f} must be a finite number >= 0, got {v!r}")
        if not self.citation:
            raise ConfigError(f"energy profile {self.name!r} needs a citation for its numbers")

    def energy_pj(self, synops: float = 0.0, macs: float = 0.0, neuron_updates: float = 0.0) -> float:
        """``E_AC * synops + E_MAC * macs (+ E_neuron * neuron_updates)``."""
        e = self.e_ac_pj * synops + self.e_mac_pj * macs
        if self.e_neuron_pj is not None:
            e += self.e_neuron_pj * neuron_updates
        return float(e)

    def breakdown_pj(self, synops: float = 0.0, macs: float = 0.0, neuron_updates: float = 0.0) -> Dict[str, float]:
        """The energy split into its three parts (neurons 0 when the profile does not charge them)."""
        return {
            "synops": float(self.e_ac_pj * synops),
            "macs": float(self.e_mac_pj * macs),
            "neurons": float((self.e_neuron_pj or 0.0) * neuron_updates),
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name, "e_ac_pj": self.e_ac_pj, "e_mac_pj": self.e_mac_pj,
            "e_neuron_pj": self.e_neuron_pj, "citation": self.citation, "description": self.description,
        }


PROFILES: Dict[str, EnergyProfile] = {}

HOROWITZ_2014 = (
    "M. Horowitz, \"1.1 Computing's energy problem (and what we can do about it)\", IEEE ISSCC 2014, "
    "pp. 10-14: 45 nm, 32-bit floating point, add 0.9 pJ, multiply 3.7 pJ (MAC 4.6 pJ)"
)
DAVIES_2018 = (
    "M. Davies et al., \"Loihi: A Neuromorphic Manycore Processor with On-Chip Learning\", IEEE Micro "
    "38(1):82-99, 2018, Table 2 (pre-silicon SDF/SPICE simulation, 14 nm, 0.75 V): synaptic spike op "
    "23.6 pJ (min), neuron update 81 pJ (active) / 52 pJ (inactive)"
)


def register_profile(profile: EnergyProfile) -> EnergyProfile:
    """Register ``profile`` under its name; a second profile with the same name is rejected."""
    if not isinstance(profile, EnergyProfile):
        raise ConfigError(f"expected an EnergyProfile, got {type(profile).__name__}")
    if profile.name in PROFILES:
        raise ConfigError(f"energy profile {profile.name!r} is already registered")
    PROFILES[profile.name] = profile
    return profile


def profile_names() -> Tuple[str, ...]:
    return tuple(sorted(PROFILES))


def get_profile(profile) -> EnergyProfile:
    """The profile named ``profile`` (an :class:`EnergyProfile` is returned as is)."""
    if isinstance(profile, EnergyProfile):
        return profile
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown energy profile {profile!r}; known profiles: {', '.join(profile_names())}"
        )
    return PROFILES[profile]


DEFAULT_PROFILE = register_profile(EnergyProfile(
    name="45nm",
    e_ac_pj=0.9,
    e_mac_pj=4.6,
    e_neuron_pj=None,
    citation=HOROWITZ_2014,
    description="the papers' estimate (SDT v3, SpikeYOLO, SpikeTrack): E_AC = 0.9 pJ, E_MAC = 4.6 pJ, "
                "neuron updates not charged",
))

register_profile(EnergyProfile(
    name="loihi",
    e_ac_pj=23.6,
    e_mac_pj=4.6,
    e_neuron_pj=81.0,
    citation=DAVIES_2018 + "; host MACs (off-chip) at the 45 nm MAC energy: " + HOROWITZ_2014,
    description="Intel Loihi (first generation): every SynOp at the minimum synaptic spike op energy, every "
                "neuron update at the active-update energy (an upper bound: an inactive update costs 52 pJ); "
                "spike routing (1.7 pJ within a tile, 3-4 pJ per tile hop) depends on placement and is not "
                "charged; host MACs at 4.6 pJ",
))
