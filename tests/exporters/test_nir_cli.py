"""`spikedeploy export --target nir --nir-profile ... --check-peers` from the command line."""

from __future__ import annotations

import textwrap

import pytest

nir = pytest.importorskip("nir")

from spikedeploy.cli import _build_parser, main
from spikedeploy.exporters import nir as NX
from spikedeploy.exporters import nir_peers as NP

FACTORY = textwrap.dedent('''
    import torch
    from spikedeploy.models.neurons import make_neuron

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
            self.lif1 = make_neuron("binary_lif", beta=0.0, threshold=0.5)
            self.pool = torch.nn.AvgPool2d(2)
            self.fc = torch.nn.Linear(64, 5)
            self.lif2 = make_neuron("binary_lif", beta=0.0, threshold=0.25)
            with torch.no_grad():  # dyadic weights: float32 peers compute the same sums exactly
                for p in self.parameters():
                    p.copy_(torch.round(p * 16) / 16)

        def forward(self, x):  # [T, B, 2, 8, 8]
            T, B = x.shape[:2]
            x = self.lif1(self.conv(x.flatten(0, 1)).reshape(T, B, 4, 8, 8))
            x = self.pool(x.flatten(0, 1)).flatten(1)
            return self.lif2(self.fc(x).reshape(T, B, 5))

    def build():
        return Net()
''')


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "peer_net_mod.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["--model", "peer_net_mod:build", "--input-shape", "2,8,8", "-T", "4"]


def test_profile_choices_are_the_exporters():
    act = {a.dest: a for p in _build_parser()._subparsers._group_actions[0].choices.values()
           for a in p._actions}["nir_profile"]
    assert tuple(act.choices) == tuple(NX.PROFILES)


@pytest.mark.parametrize("profile", sorted(NX.PROFILES))
def test_export_profile(tmp_path, capsys, factory, profile):
    out = tmp_path / "m.nir"
    assert main(["export", "--target", "nir", *factory, "--nir-profile", profile, "-o", str(out)]) == 0
    g = nir.read(out)
    assert g.metadata["profile"] == profile
    assert ("input" in g.nodes) == (profile == "portable")
    assert NX.load(out).graph.nodes  # spikedeploy reads every profile back


def test_check_peers_prints_the_table(tmp_path, capsys, factory):
    out = tmp_path / "m.nir"
    assert main(["export", "--target", "nir", *factory, "--check-peers", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| peer")}
    assert set(rows) == set(NP.PEERS)
    # lowered to binary spikes, standard nodes only: snntorch and norse run NIR's LIF exactly
    assert rows["snntorch"][1] == "exact" and rows["norse"][1] == "exact", text
    assert rows["rockpool"][1] == "fails" and "Conv2d" in rows["rockpool"][2], text
    assert all(r[1] != "not installed" for r in rows.values()), text


@pytest.mark.parametrize("argv, needle", [
    (["--target", "onnx", "--check-peers"], "--check-peers applies to the NIR target only"),
    (["--target", "lava", "--nir-profile", "literal"], "--nir-profile applies to the NIR target only"),
])
def test_nir_options_for_other_targets_exit_2(tmp_path, capsys, argv, needle):
    assert main(["export", *argv, "-o", str(tmp_path / "m.x")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_unknown_profile_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["export", "--target", "nir", "--nir-profile", "sinabs", "-o", str(tmp_path / "m.nir")])
    assert ei.value.code == 2 and "invalid choice: 'sinabs'" in capsys.readouterr().err
