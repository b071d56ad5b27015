"""spikedeploy's intermediate representation: ops (frozen dataclasses), the graph and its validator."""

from spikedeploy.ir.graph import Graph, Node, TensorSpec, validate
from spikedeploy.ir import ops

__all__ = ["Graph", "Node", "TensorSpec", "validate", "ops"]
