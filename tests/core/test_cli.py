"""The CLI: verify/inspect/demo, --help, and clear errors with exit codes and no partial output."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from spikedeploy import api
from spikedeploy.cli import _build_parser, main


def test_verify_writes_reports(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["verify", "--neuron", "nilif", "-T", "3", "--inputs", "8", "-o", str(out), "--no-progress"])
    assert rc == 0
    md = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    assert "SUCCESS" in md and data["passed"] is True
    assert [s["name"] for s in data["stages"]] == ["capture", "fold+fuse", "binary", "graded"]
    binary = data["stages"][2]["report"]
    assert binary["spikes_occurred"] and all(l["spikes_a"] > 0 for l in binary["teacher_forced"])
    assert "report:" in capsys.readouterr().out


def test_api_mirrors_cli(tmp_path):
    rep = api.verify("sdt-test", neuron="integer_if", timesteps=2, num_inputs=4, modes=("graded",))
    assert rep.passed and [s.name for s in rep.stages] == ["capture", "fold+fuse", "graded"]


@pytest.mark.parametrize("args, needle", [
    (["--neuron", "bogus"], "unknown neuron kind 'bogus'"),
    (["--model", "no_such_pkg:factory"], "cannot import 'no_such_pkg'"),
    (["--model", "nonsense"], "unknown model 'nonsense'"),
    (["-T", "0"], "--timesteps must be a positive integer"),
    (["--modes", "binary,spiky"], "unknown spike mode 'spiky'"),
])
def test_bad_options_exit_2_without_output(tmp_path, capsys, args, needle):
    out = tmp_path / "rep"
    rc = main(["verify", "--inputs", "2", "-o", str(out), "--no-progress"] + args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_non_integer_firing_limit_is_rejected(tmp_path, capsys, monkeypatch):
    mod = tmp_path / "user_models.py"
    mod.write_text(textwrap.dedent("""
        from spikedeploy.models.sdt_test import SDTTestNet
        def bad_d():
            return SDTTestNet(neuron="ilif", neuron_kwargs={"d": 2.5})
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = main(["verify", "--model", "user_models:bad_d", "-o", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "D must be a positive integer" in capsys.readouterr().err


def test_unknown_module_names_it(tmp_path, capsys, monkeypatch):
    mod = tmp_path / "user_models2.py"
    mod.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from spikedeploy.models.neurons import MultiSpike
        class Net(nn.Module):
            input_shape = (4,)
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                self.act = nn.GELU()
                self.spike = MultiSpike(d=4)
            def forward(self, x):
                return self.spike(self.act(self.fc(x)))
        def make():
            return Net()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = main(["verify", "--model", "user_models2:make", "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "'act'" in err and "GELU" in err and "register_module_rule" in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_errors(tmp_path, capsys):
    from spikedeploy.models.sdt_test import SDTTestNet

    sd = SDTTestNet(neuron="ilif").state_dict()
    first = next(iter(sd))
    sd.pop(first)
    sd["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "mismatch.pt"
    torch.save(sd, bad)
    rc = main(["verify", "--neuron", "ilif", "--checkpoint", str(bad), "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and first in err and "extra.weight" in err and str(bad) in err

    sd = SDTTestNet(neuron="ilif").state_dict()
    key = "stem.0.weight" if "stem.0.weight" in sd else next(k for k in sd if k.endswith("weight"))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    nan = tmp_path / "nan.pt"
    torch.save(sd, nan)
    rc = main(["verify", "--neuron", "ilif", "--checkpoint", str(nan), "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and key in err and "NaN" in err


def test_checkpoint_round_trip_verifies(tmp_path):
    loaded = api.build_model("sdt-test", neuron="ilif", seed=3)
    path = tmp_path / "w.pt"
    torch.save(loaded.module.state_dict(), path)
    rep = api.verify("sdt-test", neuron="ilif", checkpoint=str(path), num_inputs=4)
    assert rep.passed and rep.weights.startswith("checkpoint")


def test_help_documents_every_option(capsys):
    parser = _build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, f"{name} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out


def test_inspect_prints_graph(capsys):
    assert main(["inspect", "--neuron", "ilif", "--encoding", "binary"]) == 0
    out = capsys.readouterr().out
    assert "SpikeLinearAttention" in out and "# after" in out and "expand-spikes[binary]" in out


def test_demo_small(tmp_path, capsys):
    rc = api.neuron_demo(tmp_path / "demo", num_inputs=4, progress=False, cases=(("nilif", 3), ("dilif", 2)))
    assert rc == 0
    summary = (tmp_path / "demo" / "report.md").read_text()
    assert "nilif" in summary and "dilif" in summary and "FAIL" not in summary
    assert (tmp_path / "demo" / "nilif" / "report.json").exists()


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "spikedeploy.cli", "verify", "--neuron", "bogus", "-o", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "unknown neuron kind" in proc.stderr and "Traceback" not in proc.stderr


def test_output_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    rc = main(["verify", "--inputs", "2", "-o", str(target), "--no-progress"])
    assert rc != 0
    assert "not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary directory left behind


def test_audit_writes_three_reports(tmp_path, capsys):
    out = tmp_path / "aud"
    assert main(["audit", "--neuron", "nilif", "-T", "3", "--inputs", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "measured SynOps" in printed and "report.html" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["runtime"] == "reference-binary"
    assert (out / "report.md").exists() and "data:image/png;base64," in (out / "report.html").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--energy", "bogus"], "unknown energy profile 'bogus'"),
    (["--inputs", "0"], "empty input set"),
])
def test_audit_bad_input(tmp_path, capsys, args, needle):
    rc = main(["audit", "-o", str(tmp_path / "aud")] + args)
    assert rc == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "aud").exists()


def test_train_command_rejects_bad_options_before_work(tmp_path, capsys):
    rc = main(["train", "--model", "spiketrack-nope", "-o", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 2 and "spiketrack-nope" in err and "Traceback" not in err
    rc = main(["train", "--eval-frames", "1", "-o", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 2 and "--eval-frames" in err
    assert not (tmp_path / "t").exists()
