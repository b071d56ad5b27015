"""The tracking application: SpikeTrack trackers deployed with spikedeploy.

- :mod:`.tracker` — SpikeTrack's host loop (crops, template memory, the box decoding);
- :mod:`.backends` — the networks the loop drives: torch, reference, ONNX, Lava (float and fixed point);
- :mod:`.run` — ``spikedeploy track``: several targets on one clip, agreement, reports, GIF;
- :mod:`.datasets` — benchmarks in their official layouts (OTB, LaSOT, GOT-10k), results files in
  each toolkit's layout, ``spikedeploy make-dataset``;
- :mod:`.benchmark` — ``spikedeploy evaluate`` (every sequence x target a task, on Ray) and ``score``;
- :mod:`.metrics` — the toolkits' scores (OTB, LaSOT, GOT-10k protocols);
- :mod:`.evaluation` — scoring a model on the held-out synthetic sequences;
- :mod:`.training` — ``spikedeploy train``;
- :mod:`.synth` — the synthetic tracking sequences cut from scikit-image's photographs.

The core (IR, capture, passes, reference, targets, checks) never imports this package
(``tests/test_layering.py``). Nothing is imported here: ``import spikedeploy.tracking`` is cheap.
"""
