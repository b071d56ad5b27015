"""Atomic outputs: complete or absent, never half-written, with ordinary permissions."""

import os
import stat

import pytest

from spikedeploy.errors import OutputPathError
from spikedeploy.fsutil import atomic_directory, atomic_write_bytes, check_output_file, require_file


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_written_file_and_directory_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        f = atomic_write_bytes(tmp_path / "a" / "f.bin", b"abc")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert f.read_bytes() == b"abc" and _mode(f) == 0o644
    assert _mode(tmp_path / "d") == 0o755 and (tmp_path / "d" / "x.txt").read_text() == "x"


def test_failure_inside_atomic_directory_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_path_checks(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputPathError, match="existing directory"):
        check_output_file(tmp_path / "dir", "model")
    with pytest.raises(Exception, match="does not exist"):
        require_file(tmp_path / "missing.onnx", "ONNX model")
    (tmp_path / "dir" / "user.txt").write_text("u")
    with pytest.raises(OutputPathError, match="did not write"):
        with atomic_directory(tmp_path / "dir"):
            pass
    with pytest.raises(OutputPathError, match="already exists"):
        with atomic_directory(tmp_path / "dir", exclusive=True, overwrite=False):
            pass
    assert sorted(os.listdir(tmp_path / "dir")) == ["user.txt"]
