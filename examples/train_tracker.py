"""Train the small SpikeTrack tracker (SpikeTrack-TINY128) on synthetic sequences made from
scikit-image's photographs, then evaluate it on held-out sequences.

    python examples/train_tracker.py -o out/train-t1                       # the bundled recipe, about 46 min
    python examples/train_tracker.py -o out/train-t3 --model spiketrack-tiny128-t3 \\
        --init-weights out/train-t1/spiketrack-tiny128-t1.pth --steps 400 --lr 5e-4

Writes the weights ({"net": state_dict}, official layout), the loss curves (CSV, PNG), the training
config (JSON) and the held-out evaluation (JSON, PNG) into the output folder.
"""

from __future__ import annotations

import argparse
import sys

from spikedeploy.errors import SpikedeployError
from spikedeploy.tracking.training import add_train_arguments, run_train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_train(args)
    except SpikedeployError as exc:
        print(f"train_tracker: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
