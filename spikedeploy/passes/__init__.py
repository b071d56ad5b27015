"""Graph passes. Contract (as torch.fx's passes): a pass is a small named class whose
``run(graph)`` returns a *new* graph and never mutates its input; ``apply`` runs it and validates
the result. :class:`PassManager` applies a sequence and validates after every pass."""

from spikedeploy.passes.base import Pass, PassManager
from spikedeploy.passes.fold_bn import FoldBatchNorm
from spikedeploy.passes.fuse import FuseLinearChains
from spikedeploy.passes.expand import ExpandSpikes
from spikedeploy.passes.quantize import QuantizeFixedPoint
from spikedeploy.passes.fix_limit import FixDynamicLimit
from spikedeploy.passes.fold_scale import FoldAttentionScale

__all__ = ["Pass", "PassManager", "FoldBatchNorm", "FuseLinearChains", "ExpandSpikes", "QuantizeFixedPoint", "FixDynamicLimit", "FoldAttentionScale",
           "default_pipeline"]


def default_pipeline(encoding=None) -> PassManager:
    """Fold BatchNorm, fuse neuron-free linear chains, and (if ``encoding`` is given) expand the
    integer activations into ``"binary"`` or ``"graded"`` spikes."""
    passes = [FoldBatchNorm(), FuseLinearChains()]
    if encoding is not None:
        passes.append(ExpandSpikes(encoding))
    return PassManager(passes)
