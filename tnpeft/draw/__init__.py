"""Tensor diagrams of adapter graphs in the papers' notation."""

from tnpeft.draw.diagram import draw_graph

__all__ = ["draw_graph"]
