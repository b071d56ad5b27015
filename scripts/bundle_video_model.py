"""Ship the trained video model: copy a training run's weights into the package (float32) with its
loss curves and training record, then measure the *shipped* weights on the held-out test clips.

    spikedeploy train --model spikevideoformer-tiny -o out/train-video
    python scripts/bundle_video_model.py out/train-video    # -> spikedeploy/data/spikevideoformer-tiny*

The run folder is what ``spikedeploy train --model spikevideoformer-tiny -o RUN`` wrote
(``spikevideoformer-tiny.pth``, ``_loss.csv``, ``_loss.png``, ``_train.json``). Writes into
``--dest`` (default: the package's data folder): ``spikevideoformer-tiny.pth`` (``{"net": ...,
"meta": ...}``, float32, strictly loadable), the three training files, and ``_eval.json`` /
``_eval.png`` measured with the weights as stored
(:func:`spikedeploy.video.training.heldout_evaluation`: the record's ``eval_clips`` test clips,
20 per class for 120, one torch thread). Exits 2 with a message on a bad run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training output folder (spikedeploy train --model spikevideoformer-tiny -o RUN)")
    parser.add_argument("--dest", default=str(REPO / "spikedeploy" / "data"),
                        help="where the shipped files go (default: the package data folder)")
    args = parser.parse_args(argv)

    import torch

    from spikedeploy.errors import SpikedeployError
    from spikedeploy.fsutil import atomic_write_bytes
    from spikedeploy.video.training import (VIDEO_VARIANT, bundle_video_weights, config_from_json, heldout_evaluation,
                                            load_video_model, write_evaluation)

    run, dest = Path(args.run), Path(args.dest)
    stem = VIDEO_VARIANT
    try:
        record = run / f"{stem}_train.json"
        needed = [run / f"{stem}{suffix}" for suffix in (".pth", "_loss.csv", "_loss.png")] + [record]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise SpikedeployError(f"{run}: missing {', '.join(missing)}; rerun `spikedeploy train --model {stem} "
                                   f"-o {run}`")
        train = json.loads(record.read_text())
        if not train.get("final"):
            raise SpikedeployError(f"{record}: the run did not finish (final: false); bundle a finished run")
        cfg = config_from_json(train)
        dest.mkdir(parents=True, exist_ok=True)
        shipped = dest / f"{stem}.pth"
        bundle_video_weights(needed[0], shipped, meta={k: train[k] for k in ("variant", "steps", "seconds")})
        for src in needed[1:]:
            atomic_write_bytes(dest / src.name, src.read_bytes())
        torch.set_num_threads(1)
        model = load_video_model(shipped)
        t0 = time.perf_counter()
        ev = heldout_evaluation(model, cfg.eval_clips, seed=cfg.eval_seed, frames=cfg.frames,
                                weights=f"{shipped.name} (as stored, float32)")
        ev["seconds"] = round(time.perf_counter() - t0, 1)
        files = write_evaluation(ev, dest, stem)
    except (SpikedeployError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"bundle_video_model: error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in dest.glob(f"{stem}*")) / 2 ** 20
    print(f"{shipped} ({size:.2f} MiB with its records); held-out top-1 {100 * ev['top1']:.1f} % "
          f"({ev['correct']}/{ev['clips']}; chance {100 * ev['chance']:.1f} %); {files['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
