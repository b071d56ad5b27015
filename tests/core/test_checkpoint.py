"""Checkpoint loading, checking and saving."""

import os

import pytest
import torch

from spikedeploy.checkpoint import apply_state_dict, load_checkpoint, save_checkpoint
from spikedeploy.errors import CheckpointError


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Linear(4, 5))


def test_round_trip(tmp_path):
    model = _model()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model.state_dict(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    state = load_checkpoint(path)
    fresh = _model()
    apply_state_dict(fresh, state, source=str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_save_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"a": torch.ones(2)}, path)
    save_checkpoint({"a": torch.zeros(3)}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_key_net_and_strip_prefix(tmp_path):
    model = _model()
    path = tmp_path / "track.pth"
    torch.save({"net": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    state = load_checkpoint(path, key="net", strip_prefix="module.")
    apply_state_dict(_model(), state)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, key="model")
    msg = str(exc.value)
    assert "track.pth" in msg and "'model'" in msg and "net" in msg and "epoch" in msg
    with pytest.raises(CheckpointError, match="key="):
        load_checkpoint(path)  # top level is not a dict of tensors


def test_mismatch_lists_everything():
    model = _model()
    state = dict(model.state_dict())
    del state["0.weight"]
    del state["1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    state["also.extra"] = torch.zeros(1)
    state["2.weight"] = torch.zeros(7, 4)
    with pytest.raises(CheckpointError) as exc:
        apply_state_dict(model, state, source="my.pt")
    msg = str(exc.value)
    assert "my.pt" in msg
    for key in ["0.weight", "1.running_var", "extra.weight", "also.extra"]:
        assert key in msg
    assert "2 missing keys" in msg and "2 unexpected keys" in msg and "1 shape conflicts" in msg
    assert "2.weight: model expects [5, 4], checkpoint has [7, 4]" in msg


def test_mismatch_message_is_truncated_with_counts():
    model = torch.nn.Linear(2, 2)
    state = dict(model.state_dict())
    state.update({f"junk.{i}": torch.zeros(1) for i in range(100)})
    with pytest.raises(CheckpointError) as exc:
        apply_state_dict(model, state)
    msg = str(exc.value)
    assert "100 unexpected keys" in msg and "(80 more)" in msg
    assert len(msg) < 1000


def test_nan_weight_is_named(tmp_path):
    state = _model().state_dict()
    state["2.weight"][0, :3] = float("nan")
    state["1.bias"][1] = float("inf")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert "bad.pt" in msg and "2.weight (3 of 20" in msg and "1.bias (1 of 3" in msg


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt.*not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_model().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "cut.pt" in str(exc.value) and "truncated" in str(exc.value)


@pytest.mark.parametrize("payload", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_file(tmp_path, payload):
    path = tmp_path / "junk.pt"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(path)


def test_not_a_dict_and_not_tensors(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="list.pt.*dict of tensors.*list"):
        load_checkpoint(path)
    path2 = tmp_path / "mixed.pt"
    torch.save({"w": torch.zeros(1), "step": 5}, path2)
    with pytest.raises(CheckpointError, match="mixed.pt.*step"):
        load_checkpoint(path2)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(1), "cfg": object()}, path)
    with pytest.raises(CheckpointError, match="obj.pt"):
        load_checkpoint(path)


def test_arbitrary_bytes(tmp_path):
    for i, payload in enumerate([b"hello", bytes(range(256)), b"\x80\x02}q\x00."[:-1]]):
        path = tmp_path / f"bytes{i}.pt"
        path.write_bytes(payload)
        with pytest.raises(CheckpointError, match=f"bytes{i}.pt"):
            load_checkpoint(path)
