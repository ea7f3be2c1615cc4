"""Tensor diagrams of adapter graphs in the papers' notation, and circuit drawings of their
circuit-shaped nodes."""

from tnpeft.draw.circuit_drawing import circuit_moments, draw_circuit
from tnpeft.draw.tensor_diagram import draw_graph

__all__ = ["draw_graph", "draw_circuit", "circuit_moments"]
