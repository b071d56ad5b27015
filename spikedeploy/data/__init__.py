"""Data shipped with spikedeploy: the synthetic tracking sequences (:mod:`.synth_tracking`, built
from scikit-image's sample photographs) and the trained weights of the small SpikeTrack tracker
(see :mod:`spikedeploy.models.spiketrack`: ``bundled_tracker``, ``default_tracker_checkpoint``,
``demo_clip``)."""
