"""Tensor diagrams of adapter graphs in the papers' notation, and circuit drawings of their
circuit-shaped nodes."""

from tnpeft.draw.circuit_drawing import circuit_moments, draw_circuit
from tnpeft.draw.sharing_diagram import draw_sharing, sharing_diagram
from tnpeft.draw.tensor_diagram import Diagram, Segment, Shape, TextBox, draw_graph, tensor_diagram

__all__ = ["draw_graph", "tensor_diagram", "Diagram", "Shape", "Segment", "TextBox", "draw_circuit", "circuit_moments",
           "sharing_diagram", "draw_sharing"]
