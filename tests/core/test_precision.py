"""--precision float|fixed on export, run, verify and audit (issue 14 item 4): the fixed-point
verify report's per-layer numbers, the fixed audit, and the one-line errors (exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikedeploy import api
from spikedeploy.audit import audit
from spikedeploy.cli import main
from spikedeploy.equivalence import PrecisionReport, compare_precision
from spikedeploy.errors import ConfigError
from spikedeploy.reference import is_fixed, run


def _fixed_stage(report, mode="binary") -> PrecisionReport:
    return next(s for s in report.stages if s.name == f"fixed-{mode}").report


@pytest.fixture(scope="module")
def verified():
    """verify --precision fixed on sdt-test (NI-LIF, T = 3), 4- and 8-bit weights."""
    return {b: api.verify("sdt-test", neuron="nilif", timesteps=3, num_inputs=8, modes=("binary",),
                          precision="fixed", weight_bits=b) for b in (4, 8)}


def test_verify_cli_writes_the_fixed_report(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["verify", "--neuron", "leaky_ilif", "-T", "2", "--inputs", "6", "--precision", "fixed",
               "-o", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "fixed-binary MEASURED" in text and "fixed-graded MEASURED" in text and "q mismatches teacher-forced" in text
    data = json.loads((out / "report.json").read_text())
    assert data["passed"] and data["precision"] == "fixed" and data["weight_bits"] == 8
    assert [s["name"] for s in data["stages"]] == ["capture", "fold+fuse", "binary", "fixed-binary", "graded",
                                                   "fixed-graded"]
    fixed = data["stages"][3]["report"]
    assert fixed["spikes_occurred"] and fixed["weight_bits"] == 8 and fixed["encoding"] == "binary"
    fed = [l for l in fixed["layers"] if any(not s.endswith(".fixed") for s in l["synapses"])]
    assert len(fed) == len(fixed["layers"]) - 1  # every layer but the first is fed by quantized synapses
    for l in fed:
        assert 0 < l["weight_error_max"] < 0.01, l["name"]  # 8 bits: below 1 % of the largest weight
        assert l["mantissa_max"] is None or 1 <= l["mantissa_max"] <= 127, l["name"]
        assert l["spikes_fixed"] > 0 and l["spikes_float"] > 0
    md = (out / "report.md").read_text()
    assert "| fixed-binary |" in md and "MEASURED" in md and "weight err max" in md and "q mism. TF" in md
    html = (out / "report.html").read_text()
    assert "positions whose spike count differs from the float run" in html and html.count("<img") >= 2  # per stage


def test_fewer_weight_bits_give_larger_errors(verified):
    r4, r8 = _fixed_stage(verified[4]), _fixed_stage(verified[8])
    assert [l.name for l in r4.layers] == [l.name for l in r8.layers]
    compared = 0
    for a, b in zip(r4.layers, r8.layers):
        if b.mantissa_max is not None:
            assert a.weight_error_max > b.weight_error_max, a.name
            assert a.mantissa_max <= 7 < 64 <= b.mantissa_max, a.name
            compared += 1
    assert compared >= 10
    t4, t8 = r4.totals(), r8.totals()
    assert t4["mismatches_tf"] > t8["mismatches_tf"] > 0
    assert r4.outputs[0].max_abs_error > r8.outputs[0].max_abs_error > 0
    assert t4["spikes_fixed"] > 0 and t8["spikes_fixed"] > 0


def test_mismatch_counts_are_the_runs_own(verified):
    """The report's teacher-forced and free-running counts are what the two fixed runs give."""
    loaded = api.build_model("sdt-test", neuron="nilif", timesteps=3)
    x = api.make_inputs(loaded, timesteps=3, num_inputs=8, seed=1)
    lowered = api.prepare_graph(loaded, timesteps=3, encoding="binary")
    fixed = api.to_fixed(lowered, x, 8)
    ref = run(lowered, x)
    free, forced = run(fixed, x), run(fixed, x, teacher=ref)
    rep = _fixed_stage(verified[8])
    for l in rep.layers:
        qa = ref.records[l.name].q
        assert l.mismatches_free == int((free.records[l.name].q != qa).sum())
        assert l.mismatches_tf == int((forced.records[l.name].q != qa).sum())
        assert l.spikes_fixed == int(free.records[l.name].q.sum())
    assert rep.first_divergence == next(l.name for l in rep.layers if l.mismatches_free)


def test_saturation_is_counted_when_forced(tmp_path):
    """Exponents calibrated on N(0, 1) inputs, the verified inputs 300x larger: the host boundary
    and the 24-bit states clamp, and the report counts every clamp."""
    loaded = api.build_model("sdt-test", neuron="ilif", timesteps=1)
    x = api.make_inputs(loaded, timesteps=1, num_inputs=4, seed=1)
    cal, big = tmp_path / "cal.npy", tmp_path / "big.npy"
    np.save(cal, x.numpy())
    np.save(big, x.numpy() * 300)
    rep = api.verify("sdt-test", neuron="ilif", timesteps=1, input_file=str(big), modes=("graded",),
                     precision="fixed", calibration=str(cal), output=tmp_path / "rep")
    fx = _fixed_stage(rep, "graded")
    assert fx.saturated > 0 and fx.saturated == (sum(l.saturated for l in fx.layers)
                                                + sum(n for _, n in fx.boundary_saturated))
    assert sum(n for _, n in fx.boundary_saturated) > 0
    assert str(cal) in fx.calibration and fx.spikes_occurred
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"Saturation events (24-bit state and host boundary clamps, fixed reference): {fx.saturated:,}" in md
    assert "clamped to the 24-bit message" in md
    unsaturated = _fixed_stage(api.verify("sdt-test", neuron="ilif", timesteps=1, num_inputs=4, modes=("graded",),
                                          precision="fixed"), "graded")
    assert unsaturated.saturated == 0


def test_export_calibrates_on_the_inputs_verify_checks():
    """export --precision fixed --inputs N calibrates on the seeded inputs verify --inputs N
    checks: the same fixed graph."""
    loaded = api.build_model("sdt-test", neuron="nilif", timesteps=3)
    cal, text = api.calibration_inputs(loaded, None, timesteps=3, num_inputs=8, seed=0)
    x = api.make_inputs(loaded, timesteps=3, num_inputs=8, seed=1)
    assert torch.equal(cal, x) and "seed 1" in text
    own, text = api.calibration_inputs(loaded, x[:, :2], timesteps=3)
    assert own.shape[1] == 2 and "2 inputs of this run" in text


def test_audit_cli_counts_the_fixed_run(tmp_path, capsys):
    out = tmp_path / "audit"
    rc = main(["audit", "--neuron", "nilif", "-T", "3", "--inputs", "4", "--precision", "fixed", "--weight-bits", "6",
               "-o", str(out)])
    assert rc == 0 and "fixed point (6-bit weights)" in capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    assert data["precision"] == "fixed" and data["fixed_point"]["weight_bits"] == 6
    assert data["fixed_point"]["saturated"] == 0 and data["spikes_occurred"]
    assert "**fixed point** (6-bit weight mantissas" in (out / "report.md").read_text()
    float_rep = audit("sdt-test", neuron="nilif", timesteps=3, num_inputs=4)
    names = [l["name"] for l in data["layers"]]
    assert names == [l.name for l in float_rep.layers]  # dyadic ops keep the float graph's row names ("mean")
    # the counts are the fixed graph's own spikes: its neuron rows' rates are the fixed run's
    loaded = api.build_model("sdt-test", neuron="nilif", timesteps=3)
    x = api.make_inputs(loaded, timesteps=3, num_inputs=4, seed=1)
    fixed = api.to_fixed(api.prepare_graph(loaded, timesteps=3, encoding="binary"), x, 6)
    res = run(fixed, x)
    rows = {l["name"]: l for l in data["layers"]}
    differ = 0
    for n in fixed.neurons():
        q = res.records[n.name].q
        assert rows[n.name]["firing_rate"] == pytest.approx(float(q.mean()), rel=1e-12)
        differ += rows[n.name]["firing_rate"] != float_rep.layer(n.name).firing_rate
    assert differ > 0
    syn = [l for l in data["layers"] if l["kind"] == "synapse"]
    assert syn and all(l["measured_synops"] > 0 for l in syn)


def test_api_mirrors_the_options():
    with pytest.raises(ConfigError, match="--weight-bits must be an integer in 2..16"):
        api.check_precision("fixed", 17)
    with pytest.raises(ConfigError, match="unknown --precision 'half'"):
        api.check_precision("half")
    assert api.check_precision("fixed") == 8 and api.check_precision("float") is None
    assert api.check_precision("fixed", 3, targets=("lava",)) == 3
    rep = audit("sdt-test", neuron="integer_if", timesteps=2, num_inputs=2, precision="fixed", encoding="graded")
    assert rep.precision == "fixed" and rep.spikes_occurred


def _one_line_error(capsys, argv, needle) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["verify", "--precision", "fixed", "--weight-bits", "1"], "--weight-bits must be an integer in 2..16"),
    (["verify", "--precision", "fixed", "--weight-bits", "17"], "--weight-bits must be an integer in 2..16"),
    (["audit", "--precision", "fixed", "--weight-bits", "0"], "--weight-bits must be an integer in 2..16"),
    (["verify", "--weight-bits", "4"], "--weight-bits applies to --precision fixed only"),
    (["verify", "--calibration", "x.npy"], "--calibration applies to --precision fixed only"),
    (["verify", "--precision", "fixed", "--calibration", "no-such.npy"], "calibration file no-such.npy does not exist"),
    (["verify", "--precision", "fixed", "--targets", "onnx"], "target 'onnx' cannot hold a fixed-point graph"),
    (["verify", "--precision", "fixed", "--targets", "nir"], "target 'nir' cannot hold a fixed-point graph"),
    (["verify", "--precision", "fixed", "--dtype", "float32"], "use --dtype float64"),
    (["audit", "--precision", "fixed", "--artifact", "a.nir", "--target", "nir"],
     "target 'nir' cannot hold a fixed-point graph"),
    (["audit", "--artifact", "a.lava", "--target", "lava", "--weight-bits", "4"], "do not apply to --artifact"),
    (["run", "--target", "onnx", "--precision", "fixed", "m.onnx", "--input", "x.npy"],
     "target 'onnx' cannot hold a fixed-point graph"),
    (["verify", "--model", "spiketrack-tiny128-t3:search", "--inputs", "1", "--precision", "fixed", "--no-progress"],
     "node 'repeat': op RepeatTime has no fixed-point form yet"),
])
def test_bad_precision_options_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, argv + ["-o", str(tmp_path / "o")] if argv[0] != "run" else argv, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target, needle", [
    ("onnx", "target 'onnx' cannot hold a fixed-point graph: it exports the integer network"),
    ("nir", "target 'nir' cannot hold a fixed-point graph: NIR has no node for the fixed-point neurons"),
])
def test_export_fixed_to_onnx_or_nir_is_refused(tmp_path, capsys, target, needle):
    out = tmp_path / f"m.{target}"
    err = _one_line_error(capsys, ["export", "--target", target, "--precision", "fixed", "-o", str(out)], needle)
    assert "use --target lava for --precision fixed, or --precision float" in err
    assert not out.exists()


def test_calibration_file_must_fit_the_model(tmp_path, capsys):
    bad = tmp_path / "cal.npy"
    np.save(bad, np.zeros((3, 2, 3, 8, 8), dtype=np.float32))
    _one_line_error(capsys, ["verify", "--precision", "fixed", "--calibration", str(bad), "-o", str(tmp_path / "o"),
                             "--no-progress"], "expected [T, N, 3, 16, 16]")
    wrong_t = tmp_path / "cal_t.npy"
    np.save(wrong_t, np.zeros((3, 2, 3, 16, 16), dtype=np.float32))
    _one_line_error(capsys, ["verify", "--precision", "fixed", "-T", "2", "--calibration", str(wrong_t), "-o",
                             str(tmp_path / "o"), "--no-progress"], "has T = 3 macro-steps; the model runs T = 2")


def test_compare_precision_refuses_a_float_graph():
    loaded = api.build_model("sdt-test", neuron="ilif", timesteps=1)
    g = api.prepare_graph(loaded, timesteps=1, encoding="binary")
    x = api.make_inputs(loaded, timesteps=1, num_inputs=2, seed=1)
    assert not is_fixed(g)
    with pytest.raises(Exception, match="not a fixed-point graph"):
        compare_precision(g, g, x)


# ---------------------------------------------------------------------------------------------
# Lava fixed_pt: the fixed bundle exported, run, verified and audited
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_bundle(tmp_path_factory):
    """sdt-test (NI-LIF, T = 3) exported to Lava in fixed point, calibrated on 8 seeded inputs."""
    out = tmp_path_factory.mktemp("fixed") / "m.lava"
    assert main(["export", "--target", "lava", "--neuron", "nilif", "-T", "3", "--precision", "fixed",
                 "--inputs", "8", "-o", str(out)]) == 0
    return out


def test_export_writes_the_fixed_graph_verify_checks(fixed_bundle):
    from spikedeploy.exporters import lava as lava_exporter

    bundle = lava_exporter.load(fixed_bundle)
    assert api.artifact_precision(bundle) == "fixed" and is_fixed(bundle.graph)
    loaded = api.build_model("sdt-test", neuron="nilif", timesteps=3)
    x = api.make_inputs(loaded, timesteps=3, num_inputs=8, seed=1)  # what verify --inputs 8 checks
    fixed = api.to_fixed(api.prepare_graph(loaded, timesteps=3, encoding="binary"), x, 8)
    assert bundle.graph.meta_dict()["fixed_point"] == fixed.meta_dict()["fixed_point"]
    for a, b in zip(bundle.graph.neurons(), fixed.neurons()):
        assert a.name == b.name and a.op.unit == b.op.unit and a.op.leak == b.op.leak


def test_run_decodes_the_integer_outputs(fixed_bundle, tmp_path, capsys):
    from spikedeploy.exporters import lava as lava_exporter
    from spikedeploy.passes.quantize import decode_outputs

    x = torch.randn((3, 2, 3, 16, 16), generator=torch.Generator().manual_seed(5))
    xf, out = tmp_path / "x.npy", tmp_path / "y.npz"
    np.save(xf, x.numpy())
    assert main(["run", "--target", "lava", str(fixed_bundle), "--input", str(xf), "-o", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "fixed point" in text and "integer_output/<name> holds the integers" in text
    y = np.load(out)
    graph = lava_exporter.load(fixed_bundle).graph
    ref = run(graph, x)
    e = graph.meta_dict()["fixed_point"]["outputs"]["head"]
    ints = y["integer_output/head"]
    assert np.array_equal(ints, ref.outputs["head"].numpy()) and np.array_equal(ints, np.round(ints))
    assert np.abs(ints).max() > 1000 * np.abs(y["output/head"]).max()  # the integers, and the decoded values
    assert np.array_equal(y["output/head"], ints * 2.0 ** -e)
    assert np.array_equal(y["output/head"], decode_outputs(graph, ref.outputs)["head"].numpy())
    spikes = 0
    for n in graph.neurons():
        assert np.array_equal(y[f"spikes/{n.name}"], ref.records[n.name].q.numpy()), n.name
        spikes += int(y[f"spikes/{n.name}"].sum())
    assert spikes > 1000
    _one_line_error(capsys, ["run", "--target", "lava", "--precision", "float", str(fixed_bundle), "--input", str(xf)],
                    "holds a fixed-point graph, not float; run it with --precision fixed")


def test_audit_of_the_fixed_bundle(fixed_bundle, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "--artifact", str(fixed_bundle), "--target", "lava", "--inputs", "2", "-o", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["precision"] == "fixed" and data["runtime"] == "lava-binary" and data["spikes_occurred"]
    assert data["fixed_point"]["weight_bits"] == 8
    assert "mean" in [l["name"] for l in data["layers"]]
    capsys.readouterr()
    _one_line_error(capsys, ["audit", "--artifact", str(fixed_bundle), "--target", "lava", "--precision", "float",
                             "-o", str(tmp_path / "a2")], "holds a fixed-point graph, not float")


@pytest.mark.parametrize("kind", ["nilif", "binary_lif"])
def test_verify_lava_fixed_is_exact(tmp_path, capsys, kind):
    out = tmp_path / "rep"
    rc = main(["verify", "--neuron", kind, "-T", "2", "--inputs", "6", "--modes", "graded", "--precision", "fixed",
               "--targets", "lava", "--target-inputs", "3", "-o", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    lava = data["stages"][-1]
    assert lava["name"] == "lava" and lava["passed"]
    rep = lava["report"]
    assert rep["free_verdict"] == "exact" and rep["spikes_occurred"] and rep["saturation_target"] is not None
    assert all(l["mismatches"] == 0 and l["ties"] == 0 and l["tie_eps"] == 0.0 for l in rep["free_running"])
    assert all(o["max_abs_error"] == 0.0 and o["rtol"] == 0.0 for o in rep["outputs"])
    assert sum(l["spikes_a"] for l in rep["free_running"]) > 100
    fixed = data["stages"][3]["report"]
    assert fixed["target"] == "lava" and fixed["target_inputs"] == 3
    assert all(l["target_saturated"] == 0 for l in fixed["layers"])


def test_verify_lava_fixed_counts_saturation_like_the_reference(tmp_path):
    """Inputs 300x beyond the calibration: the host boundary clamps, and the first IF neuron's
    state (the clamped input accumulated over T = 2) clamps at 2**23 - 1 in Lava's fixed_pt
    models where the reference clamps, as often (counted per layer, never wrapped)."""
    loaded = api.build_model("sdt-test", neuron="integer_if", timesteps=2)
    x = api.make_inputs(loaded, timesteps=2, num_inputs=3, seed=1)
    cal, big = tmp_path / "cal.npy", tmp_path / "big.npy"
    np.save(cal, x.numpy())
    np.save(big, x.numpy() * 300)
    rep = api.verify("sdt-test", neuron="integer_if", timesteps=2, input_file=str(big), modes=("graded",),
                     precision="fixed", calibration=str(cal), targets=("lava",), target_inputs=3)
    lava = rep.stages[-1].report
    assert rep.stages[-1].passed and lava.equivalence.free_verdict == "exact"
    assert lava.saturation_target == lava.saturation_reference and sum(lava.saturation_reference.values()) > 0
    fx = _fixed_stage(rep, "graded")
    assert sum(l.target_saturated for l in fx.layers) == sum(l.saturated for l in fx.layers) > 0


def test_audit_runtime_lava_fixed(tmp_path, capsys):
    """audit --runtime lava --precision fixed: Lava's fixed_pt counts, checked against the fixed
    reference first, equal the reference audit of the same fixed graph row by row."""
    out = tmp_path / "audit"
    assert main(["audit", "--neuron", "ilif", "--inputs", "2", "--precision", "fixed", "--runtime", "lava",
                 "-o", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["runtime"] == "lava-binary" and data["precision"] == "fixed" and data["spikes_occurred"]
    ref = audit("sdt-test", neuron="ilif", num_inputs=2, precision="fixed")
    assert [(l["name"], l["measured_synops"]) for l in data["layers"]] == [(l.name, l.measured_synops)
                                                                          for l in ref.layers]
    assert data["fixed_point"]["saturated"] == ref.fixed_point["saturated"] == 0
    # inputs 300x beyond the calibration: Lava counts the clamps the reference counts
    loaded = api.build_model("sdt-test", neuron="integer_if", timesteps=2)
    x = api.make_inputs(loaded, timesteps=2, num_inputs=2, seed=1)
    cal, big = tmp_path / "cal.npy", tmp_path / "big.npy"
    np.save(cal, x.numpy())
    np.save(big, x.numpy() * 300)
    kw = dict(neuron="integer_if", timesteps=2, input_file=str(big), precision="fixed", calibration=str(cal))
    lava_sat, ref_sat = (audit("sdt-test", runtime=r, **kw).fixed_point["saturated"] for r in ("lava", "reference"))
    assert lava_sat == ref_sat > 0


def test_a_float_bundle_is_not_run_as_fixed(tmp_path, capsys):
    out = tmp_path / "f.lava"
    assert main(["export", "--target", "lava", "--neuron", "ilif", "-o", str(out)]) == 0
    xf = tmp_path / "x.npy"
    np.save(xf, np.zeros((1, 1, 3, 16, 16), dtype=np.float32))
    capsys.readouterr()
    _one_line_error(capsys, ["run", "--target", "lava", "--precision", "fixed", str(out), "--input", str(xf)],
                    "holds a float graph, not fixed-point; export the model again with --precision fixed")
    _one_line_error(capsys, ["audit", "--artifact", str(out), "--target", "lava", "--precision", "fixed",
                             "-o", str(tmp_path / "a")], "holds a float graph, not fixed-point")
