"""spikedeploy: deploy integer-activation spiking networks exactly.

Pipeline (see docs/architecture.md): :mod:`spikedeploy.capture` (PyTorch -> IR),
:mod:`spikedeploy.ir`, :mod:`spikedeploy.passes`, :mod:`spikedeploy.reference` (the oracle),
:mod:`spikedeploy.equivalence`, :mod:`spikedeploy.targets` (NIR, Lava, ONNX) and
:mod:`spikedeploy.api` / the ``spikedeploy`` command line.
"""

__version__ = "0.1.0"
