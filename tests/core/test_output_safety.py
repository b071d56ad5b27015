"""Nothing lost: output folders are written only when new, empty, spikedeploy's own earlier output,
or with --overwrite; files spikedeploy did not write are never removed; inputs inside the output
folder are refused; artifacts are never replaced unasked, not even by a concurrent export."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spikedeploy.cli import main
from spikedeploy.errors import OutputPathError
from spikedeploy.fsutil import MARKER, atomic_directory, atomic_write_bytes, check_output_dir, read_marker

SPIKEDEPLOY = Path(sys.executable).with_name("spikedeploy")


def _clip(n=3, h=96, w=128):
    f = np.full((n, h, w, 3), 90, np.uint8)
    for i in range(n):
        f[i, 30:60, 30 + 6 * i:60 + 6 * i] = 230
    return f


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("spikedeploy") and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# the data-loss case of the issue: track -o onto the folder that holds its own clip
# --------------------------------------------------------------------------------------------


def test_track_refuses_an_output_folder_that_holds_its_inputs(tmp_path, capsys):
    data = tmp_path / "seq"
    (data / "img").mkdir(parents=True)
    from PIL import Image

    for i, f in enumerate(_clip()):
        Image.fromarray(f).save(data / "img" / f"{i:04d}.png")
    (data / "groundtruth.txt").write_text("30,30,30,30\n36,30,30,30\n42,30,30,30\n")
    before = _snapshot(data)
    for extra in ([], ["--overwrite"]):
        rc = main(["track", "--clip", str(data / "img"), "--ground-truth", str(data / "groundtruth.txt"),
                   "-o", str(data), "--no-progress", "--no-gif", "--checkpoint", "random", *extra])
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and "lies inside the output folder" in line
        assert _snapshot(data) == before  # frames and ground truth untouched
    assert sorted(os.listdir(tmp_path)) == ["seq"]  # no temporary left beside it


@pytest.mark.parametrize("command", [
    ["verify", "--inputs", "2", "--modes", "graded", "--no-progress"],
    ["audit", "--inputs", "1"],
])
def test_foreign_folder_refused_then_written_into_with_overwrite(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "report.md").write_text("my own notes, same name as a report")
    rc = main(command + ["-o", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "did not write" in line and "--overwrite" in line and "keep.txt" in line
    assert sorted(os.listdir(out)) == ["keep.txt", "report.md"]
    assert (out / "report.md").read_text() == "my own notes, same name as a report"
    # --overwrite: the report is written, the same-named file replaced (asked for), keep.txt stays
    assert main(command + ["-o", str(out), "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert (out / "report.md").read_text() != "my own notes, same name as a report"
    assert (out / "report.json").is_file() and "keep.txt" not in read_marker(out)
    # later runs into it again need --overwrite (keep.txt is still there), and keep it
    capsys.readouterr()
    assert main(command + ["-o", str(out)]) == 2
    assert main(command + ["-o", str(out), "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_own_earlier_output_is_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["verify", "--inputs", "2", "--modes", "graded", "--no-progress", "-o", str(out)]
    assert main(args) == 0
    first = json.loads((out / MARKER).read_text())
    assert first["tool"] == "spikedeploy" and {"report.md", "report.json"} <= set(first["files"])
    # a second run replaces it whole (it is spikedeploy's own output, nothing else is in it)
    (out / "report.md").write_text("stale")
    assert main(args) == 0
    assert (out / "report.md").read_text() != "stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_stale_files_of_an_earlier_output_go_others_stay(tmp_path):
    out = tmp_path / "o"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("2")
    (out / "sub" / "user.txt").write_text("user")  # the user adds a file to our output
    with pytest.raises(OutputPathError, match="did not write"):
        check_output_dir(out)
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("3")
    # a.txt and sub/b.txt were ours and are not rewritten: removed; the user's file stays
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted(
        ["c.txt", "sub", "sub/user.txt", MARKER])
    assert read_marker(out) == {"c.txt"}


def test_empty_folder_and_dangling_link(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", "--inputs", "2", "--modes", "graded", "--no-progress", "-o", str(empty)]) == 0
    assert (empty / "report.json").is_file()
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    for args in (["verify", "--inputs", "2", "--modes", "graded", "--no-progress", "-o", str(link)],
                 ["export", "--target", "onnx", "-o", str(link)]):
        rc = main(args)
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and "symbolic link" in line
        assert os.path.islink(link) and not (tmp_path / "nowhere").exists()


def test_output_paths_that_cannot_be_written(tmp_path, capsys):
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((1, 1, 3, 16, 16), np.float32))
    art = tmp_path / "m.onnx"
    assert main(["export", "--target", "onnx", "-o", str(art)]) == 0
    cases = [
        ["run", "--target", "onnx", str(art), "--input", str(inputs), "-o", str(tmp_path)],  # a directory
        ["run", "--target", "onnx", str(art), "--input", str(inputs), "-o", str(inputs)],  # its input
        ["export", "--target", "onnx", "-o", "/proc/spikedeploy-test/m.onnx"],
        ["verify", "--inputs", "2", "--no-progress", "-o", "/proc/spikedeploy-test"],
    ]
    capsys.readouterr()
    for args in cases:
        rc = main(args)
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2, (args, line)
    assert np.load(inputs).shape == (1, 1, 3, 16, 16)
    # an existing outputs file is replaced only with --overwrite
    out = tmp_path / "o.npz"
    out.write_bytes(b"keep")
    assert main(["run", "--target", "onnx", str(art), "--input", str(inputs), "-o", str(out), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert main(["run", "--target", "onnx", str(art), "--input", str(inputs), "-o", str(out), "--no-progress",
                 "--overwrite"]) == 0
    assert "output/head" in np.load(out).files


def test_export_overwrite_and_concurrent_exports(tmp_path, capsys):
    art = tmp_path / "m.onnx"
    assert main(["export", "--target", "onnx", "-o", str(art)]) == 0
    first = art.read_bytes()
    assert main(["export", "--target", "onnx", "--seed", "3", "-o", str(art)]) == 2
    assert art.read_bytes() == first
    assert main(["export", "--target", "onnx", "--seed", "3", "-o", str(art), "--overwrite"]) == 0
    assert art.read_bytes() != first
    # two writers to one new path: exactly one succeeds, the other is refused, nothing else left
    target = tmp_path / "race.bin"
    results = []
    barrier = threading.Barrier(2)

    def write(payload):
        barrier.wait()
        try:
            atomic_write_bytes(target, payload, replace=False)
            results.append(payload)
        except OutputPathError as e:
            results.append(e)

    threads = [threading.Thread(target=write, args=(bytes([i]) * 1_000_000,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if isinstance(r, bytes)]
    assert len(ok) == 1 and len(results) == 2 and target.read_bytes() == ok[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "race.bin"]


def test_concurrent_lava_bundles_one_wins(tmp_path):
    """Two exclusive folder writers to one new path (two Lava exports at once): one fails."""
    target = tmp_path / "b.lava"
    results = []
    barrier = threading.Barrier(2)

    def write(label):
        try:
            with atomic_directory(target, exclusive=True) as tmp:
                (tmp / "who.txt").write_text(label)
                barrier.wait()
            results.append(label)
        except OutputPathError as e:
            results.append(e)

    threads = [threading.Thread(target=write, args=(s,)) for s in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if isinstance(r, str)]
    assert len(ok) == 1 and (target / "who.txt").read_text() == ok[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.lava"]


def test_cli_argument_errors_are_one_line_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", "--no-such-option"])
    assert e.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "unrecognized arguments: --no-such-option" in line and "--help" in line
    with pytest.raises(SystemExit) as e:
        main(["track", "--lava-frames", "x", "--clip", "c"])
    assert e.value.code == 2 and "invalid int value" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    from spikedeploy import __version__

    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"spikedeploy {__version__}"


def test_verify_without_modes_is_refused(tmp_path, capsys):
    rc = main(["verify", "--modes", ",", "--inputs", "2", "-o", str(tmp_path / "v"), "--no-progress"])
    assert rc == 2 and "no spike mode" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_nothing_left(tmp_path):
    """SIGTERM to a running command: exit 143, the one line ``spikedeploy: terminated``, no output
    and no hidden temporary (the handler raises in the main thread, so every cleanup runs)."""
    out = tmp_path / "rep"
    clip = tmp_path.parent / f"{tmp_path.name}-clip.npy"
    np.save(clip, _clip(n=2000))  # 2000 frames with the reference take minutes, in little memory
    proc = subprocess.Popen([str(SPIKEDEPLOY), "track", "--clip", str(clip), "--init-box", "30,30,30,30",
                             "--target", "reference-binary", "--checkpoint", "random", "--no-progress", "-o", str(out)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5.0)  # imports done, tracking running
    assert proc.poll() is None, proc.communicate()
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 10
    assert proc.returncode == 143 and _one_error_line(err) == "spikedeploy: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
