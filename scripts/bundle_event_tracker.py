"""Ship the trained event tracker: copy a training run's weights into the package (float32) with its
loss curves and training record, then measure the *shipped* weights on the held-out event sequences.

    spikedeploy train --model spiketrack-event-tiny -o out/train-event --threads 1
    python scripts/bundle_event_tracker.py out/train-event    # -> spikedeploy/data/spiketrack-event-tiny*

The run folder is what ``spikedeploy train --model spiketrack-event-tiny -o RUN`` wrote
(``spiketrack-event-tiny.pth``, ``_loss.csv``, ``_loss.png``, ``_train.json``). Writes into
``--dest`` (default: the package's data folder): ``spiketrack-event-tiny.pth`` (``{"net": ...,
"meta": ...}``, float32, strictly loadable), the three training files, and ``_eval.json`` /
``_eval.png`` measured with the weights as stored
(:func:`spikedeploy.tracking.event_evaluation.heldout_event_evaluation`: 12 held-out sequences of
60 frames, DI-LIF and fixed D, one torch thread). Exits 2 with a message on a bad run folder.
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
    parser.add_argument("run", help="training output folder (spikedeploy train --model spiketrack-event-tiny -o RUN)")
    parser.add_argument("--dest", default=str(REPO / "spikedeploy" / "data"),
                        help="where the shipped files go (default: the package data folder)")
    parser.add_argument("--eval-sequences", type=int, default=12, help="held-out sequences (default: %(default)s)")
    parser.add_argument("--eval-frames", type=int, default=60, help="frames per sequence (default: %(default)s)")
    args = parser.parse_args(argv)

    from spikedeploy.checkpoint import load_checkpoint, save_checkpoint
    from spikedeploy.errors import SpikedeployError
    from spikedeploy.fsutil import atomic_write_bytes
    from spikedeploy.tracking.event_evaluation import heldout_event_evaluation, write_event_evaluation
    from spikedeploy.tracking.event_training import EVENT_VARIANT, event_state_dict, load_event_weights

    run, dest = Path(args.run), Path(args.dest)
    stem = EVENT_VARIANT
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
        model = load_event_weights(needed[0])  # strict: a mismatching file raises
        load_checkpoint(needed[0], key="net")  # finite tensors
        dest.mkdir(parents=True, exist_ok=True)
        shipped = dest / f"{stem}.pth"
        meta = {k: train[k] for k in ("variant", "steps", "seconds")}
        save_checkpoint({"net": event_state_dict(model), "meta": meta}, shipped)
        for src in needed[1:]:
            atomic_write_bytes(dest / src.name, src.read_bytes())
        model = load_event_weights(shipped)
        ev = heldout_event_evaluation(model, args.eval_sequences, args.eval_frames, progress=True,
                                      weights=f"{shipped.name} (as stored, float32)")
        files = write_event_evaluation(ev, dest, stem)
    except (SpikedeployError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"bundle_event_tracker: error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in dest.glob(f"{stem}*")) / 2 ** 20
    fx = ev["fixed_d"]
    print(f"{shipped} ({size:.2f} MiB with its records); held-out AUC {ev['auc']:.3f}, P@20 {ev['precision20']:.3f} "
          f"(static box {ev['static_auc']:.3f} / {ev['static_precision20']:.3f}; fixed D {fx['auc']:.3f} / "
          f"{fx['precision20']:.3f}); {files['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
