"""`spikedeploy export` / `run` / `verify --targets` from the command line, for every target."""

import textwrap

import numpy as np
import pytest

from spikedeploy.cli import main

pytest.importorskip("onnxruntime", reason="the ONNX target needs onnxruntime (make setup installs it)")
pytest.importorskip("nir", reason="the NIR target needs nir (make setup installs it)")


@pytest.fixture
def inputs(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(3, 2, 3, 16, 16)))
    return path


@pytest.mark.parametrize("target, name", [("onnx", "m.onnx"), ("nir", "m.nir"), ("lava", "m.lava")])
def test_export_then_run(tmp_path, capsys, inputs, target, name):
    art = tmp_path / name
    assert main(["export", "--target", target, "--neuron", "nilif", "-T", "3", "-o", str(art)]) == 0
    assert art.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    out = tmp_path / "out.npz"
    assert main(["run", "--target", target, str(art), "--input", str(inputs), "-o", str(out), "--no-progress"]) == 0
    data = np.load(out)
    spikes = {k: data[k] for k in data.files if k.startswith("spikes/")}
    assert len(spikes) == 14 and all(v.sum() > 0 for v in spikes.values())
    assert data["output/head"].shape == (3, 2, 10)
    # the same artifact again: the path exists -> exit 2, artifact untouched
    before = art.stat().st_mtime_ns
    assert main(["export", "--target", target, "--neuron", "nilif", "-T", "3", "-o", str(art)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert art.stat().st_mtime_ns == before


def test_onnx_and_nir_agree_with_the_reference(tmp_path, capsys):
    out = tmp_path / "v"
    rc = main(["verify", "--neuron", "integer_if", "-T", "2", "--inputs", "6", "--targets", "reference,onnx,nir",
               "-o", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "onnx       SUCCESS" in printed and "nir        SUCCESS" in printed


def test_encoding_a_target_does_not_take(tmp_path, capsys):
    rc = main(["export", "--target", "onnx", "--spike-encoding", "graded", "-o", str(tmp_path / "g.onnx")])
    assert rc == 2 and "does not take --spike-encoding 'graded'" in capsys.readouterr().err
    assert not (tmp_path / "g.onnx").exists()


def test_unsupported_op_exits_2_naming_op_and_target(tmp_path, capsys, monkeypatch):
    """A user op with capture and reference rules but no exporter rule stops the export."""
    mod = tmp_path / "custom_op_model.py"
    mod.write_text(textwrap.dedent("""
        from dataclasses import dataclass
        import torch
        from torch import nn
        from spikedeploy.capture import register_module_rule
        from spikedeploy.ir import ops as O
        from spikedeploy.reference import Rule, register_rule
        from spikedeploy.models.neurons import MultiSpike

        @dataclass(frozen=True, eq=False)
        class Square(O.Op):
            \"\"\"y = x * x\"\"\"
            def infer_shape(self, s):
                return tuple(s)

        class SquareRule(Rule):
            def __call__(self, op, inputs, ctx):
                return inputs[0] * inputs[0]

        class SquareModule(nn.Module):
            def forward(self, x):
                return x * x

        register_rule(Square, SquareRule())

        @register_module_rule(SquareModule)
        def _sq(ctx, m, where, args, kwargs, out):
            return ctx.emit(where, Square(), [args[0]], source=where, layout=args[0].layout, shape=tuple(out.shape))

        class Net(nn.Module):
            input_shape = (4,)
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                self.sq = SquareModule()
                self.spike = MultiSpike(d=4)
            def forward(self, x):
                return self.spike(self.sq(self.fc(x)))

        def make():
            return Net()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    for target, name in (("onnx", "c.onnx"), ("nir", "c.nir")):
        rc = main(["export", "--model", "custom_op_model:make", "--target", target, "-o", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "Square" in err and "'sq'" in err and repr(target) in err and "Traceback" not in err
        assert not (tmp_path / name).exists()


def test_run_rejects_a_missing_artifact_and_bad_input(tmp_path, capsys, inputs):
    assert main(["run", "--target", "onnx", str(tmp_path / "nope.onnx"), "--input", str(inputs)]) != 0
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    art = tmp_path / "m.onnx"
    assert main(["export", "--target", "onnx", "-o", str(art)]) == 0
    assert main(["run", "--target", "onnx", str(art), "--input", str(bad)]) == 2
    assert "cannot read input file" in capsys.readouterr().err


def test_audit_with_lava_counts(tmp_path, capsys):
    """The audit of the Lava run: its counts were checked against the reference, and they are the
    reference audit's counts exactly."""
    import json

    ref, lava = tmp_path / "ref", tmp_path / "lava"
    common = ["--neuron", "ilif", "--inputs", "2", "--encoding", "graded"]
    assert main(["audit", *common, "-o", str(ref)]) == 0
    assert main(["audit", *common, "--runtime", "lava", "-o", str(lava)]) == 0
    a = json.loads((ref / "report.json").read_text())
    b = json.loads((lava / "report.json").read_text())
    assert a["runtime"].startswith("reference") and b["runtime"].startswith("lava")
    assert a["totals"]["per_frame"]["measured_synops"] > 0
    assert a["totals"] == b["totals"]


def test_audit_of_exported_artifacts(tmp_path, capsys):
    """A Lava bundle and a NIR file carry their IR graph: auditing them gives the same counts, and
    an ONNX artifact (the integer network) is refused with a reason."""
    import json

    lava, nir_file = tmp_path / "m.lava", tmp_path / "m.nir"
    assert main(["export", "--target", "lava", "--neuron", "ilif", "-o", str(lava)]) == 0
    assert main(["export", "--target", "nir", "--neuron", "ilif", "-o", str(nir_file)]) == 0
    for target, art in (("lava", lava), ("nir", nir_file)):
        assert main(["audit", "--artifact", str(art), "--target", target, "--inputs", "2",
                     "-o", str(tmp_path / f"a-{target}")]) == 0
    a = json.loads((tmp_path / "a-lava" / "report.json").read_text())
    b = json.loads((tmp_path / "a-nir" / "report.json").read_text())
    assert a["runtime"].startswith("lava") and b["runtime"].startswith("reference")
    assert a["totals"] == b["totals"] and a["totals"]["per_frame"]["measured_synops"] > 0

    from spikedeploy.audit import AuditError, audit_artifact

    with pytest.raises(AuditError, match="integer network"):
        audit_artifact("onnx", tmp_path / "whatever.onnx")
