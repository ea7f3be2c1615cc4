"""Tensor diagrams of adapter graphs in the papers' notation."""

from tnpeft.draw.circuit import circuit_moments, draw_circuit
from tnpeft.draw.diagram import draw_graph

__all__ = ["draw_graph", "draw_circuit", "circuit_moments"]
