"""Energy profiles: the registry, the published constants and the energy formula."""

from __future__ import annotations

import pytest

from spikedeploy import energy as E
from spikedeploy.errors import ConfigError


def test_default_is_the_papers_45nm_profile():
    p = E.get_profile("45nm")
    assert p is E.DEFAULT_PROFILE
    assert (p.e_ac_pj, p.e_mac_pj, p.e_neuron_pj) == (0.9, 4.6, None)
    assert "Horowitz" in p.citation and "ISSCC 2014" in p.citation


def test_loihi_profile_cites_davies_2018():
    p = E.get_profile("loihi")
    assert (p.e_ac_pj, p.e_neuron_pj) == (23.6, 81.0)
    assert "Davies" in p.citation and "IEEE Micro" in p.citation and "Table 2" in p.citation


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown energy profile 'tpu'.*45nm.*loihi"):
        E.get_profile("tpu")


def test_duplicates_are_rejected_and_new_profiles_register():
    with pytest.raises(ConfigError, match="already registered"):
        E.register_profile(E.EnergyProfile("45nm", 1.0, 2.0, citation="x"))
    p = E.EnergyProfile("test-profile-unique", 1.0, 2.0, 3.0, citation="made up for a test")
    try:
        assert E.register_profile(p) is p
        assert E.get_profile("test-profile-unique") is p
        assert "test-profile-unique" in E.profile_names()
    finally:
        E.PROFILES.pop("test-profile-unique", None)


def test_profile_object_passes_through():
    p = E.EnergyProfile("adhoc", 1.0, 2.0, citation="ad hoc")
    assert E.get_profile(p) is p


@pytest.mark.parametrize("kwargs", [
    dict(name="bad", e_ac_pj=-1.0, e_mac_pj=1.0, citation="c"),
    dict(name="bad", e_ac_pj=1.0, e_mac_pj=float("nan"), citation="c"),
    dict(name="bad", e_ac_pj=1.0, e_mac_pj=1.0, e_neuron_pj=float("inf"), citation="c"),
    dict(name="bad", e_ac_pj=1.0, e_mac_pj=1.0, citation=""),
    dict(name="", e_ac_pj=1.0, e_mac_pj=1.0, citation="c"),
])
def test_bad_profiles_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        E.EnergyProfile(**kwargs)


def test_energy_formula():
    p45 = E.get_profile("45nm")
    assert p45.energy_pj(synops=10, macs=2, neuron_updates=1000) == pytest.approx(0.9 * 10 + 4.6 * 2)
    lo = E.get_profile("loihi")
    assert lo.energy_pj(synops=10, macs=2, neuron_updates=3) == pytest.approx(23.6 * 10 + 4.6 * 2 + 81.0 * 3)
    b = lo.breakdown_pj(10, 2, 3)
    assert b == pytest.approx({"synops": 236.0, "macs": 9.2, "neurons": 243.0})
    assert p45.breakdown_pj(10, 2, 3)["neurons"] == 0.0
