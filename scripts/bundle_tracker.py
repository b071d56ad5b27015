"""Ship a trained tracker: copy a training run's weights into the package (as float16) with its
loss curves and training record, then measure the *shipped* weights on the held-out sequences.

    python scripts/bundle_tracker.py out/train-t1            # -> spikedeploy/data/spiketrack-tiny128-t1*
    python scripts/bundle_tracker.py out/train-t3 --dest DIR

The run folder is what ``spikedeploy train -o RUN`` wrote (``<variant>.pth``, ``_loss.csv``,
``_loss.png``, ``_train.json``). Writes into ``--dest`` (default: the package's data folder):
``<variant>.pth`` (float16, strictly loadable), the three training files, and
``<variant>_eval.json`` / ``_eval.png`` measured with the weights as stored (12 held-out sequences
of 60 frames unless told otherwise). ``make bundled-tracker`` runs training and this script for
T = 1 and T = 3. Exits 2 with a message on a bad run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training output folder (spikedeploy train -o RUN)")
    parser.add_argument("--dest", default=str(REPO / "spikedeploy" / "data"),
                        help="where the shipped files go (default: the package data folder)")
    parser.add_argument("--eval-sequences", type=int, default=12, help="held-out sequences (default: %(default)s)")
    parser.add_argument("--eval-frames", type=int, default=60, help="frames per sequence (default: %(default)s)")
    args = parser.parse_args(argv)

    import torch

    from spikedeploy.errors import SpikedeployError
    from spikedeploy.fsutil import atomic_write_bytes
    from spikedeploy.models.spiketrack import spiketrack_from_checkpoint
    from spikedeploy.tracking.evaluation import heldout_evaluation, write_heldout_evaluation
    from spikedeploy.tracking.training import bundle_weights

    run, dest = Path(args.run), Path(args.dest)
    try:
        records = sorted(run.glob("*_train.json"))
        if len(records) != 1:
            raise SpikedeployError(f"{run}: expected one <variant>_train.json from `spikedeploy train`, "
                                   f"found {len(records)}")
        train = json.loads(records[0].read_text())
        stem = train["variant"]
        needed = [run / f"{stem}{suffix}" for suffix in (".pth", "_loss.csv", "_loss.png")]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise SpikedeployError(f"{run}: missing {', '.join(missing)}; rerun `spikedeploy train -o {run}`")
        if not train.get("final"):
            raise SpikedeployError(f"{records[0]}: the run did not finish (final: false); bundle a finished run")
        dest.mkdir(parents=True, exist_ok=True)
        meta = {k: train[k] for k in ("variant", "steps", "seconds")}
        shipped = bundle_weights(needed[0], dest / f"{stem}.pth", dtype=torch.float16, meta=meta)
        for src in needed[1:] + [records[0]]:
            atomic_write_bytes(dest / src.name, src.read_bytes())
        torch.set_num_threads(2)
        model = spiketrack_from_checkpoint(shipped).float().eval()
        ev = heldout_evaluation(model, args.eval_sequences, args.eval_frames, progress=True,
                                weights=f"{shipped.name} (as stored, float16)")
        files = write_heldout_evaluation(ev, dest, stem)
    except (SpikedeployError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"bundle_tracker: error: {exc}", file=sys.stderr)
        return 2
    size = shipped.stat().st_size / 2 ** 20
    print(f"{shipped} ({size:.1f} MiB); held-out AUC {ev['auc']:.3f}, P@20 {ev['precision20']:.3f} "
          f"(static box {ev['static_auc']:.3f} / {ev['static_precision20']:.3f}); {files['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
