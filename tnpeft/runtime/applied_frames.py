"""Stages that apply one frame to the activation instead of contracting with its matrix.

A stage ``activation × U`` whose only node is a unitary node with a cheap :meth:`apply_frame
<tnpeft.params.unitary.FrameModule.apply_frame>` (a Givens butterfly: ``O(N log N)`` per vector) and
whose indices are one leg of ``U`` in, the other out — its batch legs passing through — is run as
``U`` applied to every vector: the ``N×K`` matrix is never formed, in forward or backward. A wide
butterfly frame at ``N = 3072`` costs about 1.6 % of the dense product this way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tnpeft.graph.nodes import Node, Unitary
from tnpeft.params.unitary import FrameModule

#: apply a frame to the activation when its :meth:`~tnpeft.params.unitary.FrameModule.apply_cost`
#: (work per vector over ``N·K``) is below this: element-wise passes run several times slower per
#: multiply-add than a matrix product
APPLY_THRESHOLD = 0.25


@dataclass(frozen=True)
class FrameApplication:
    """How one stage maps its activation through frame ``node`` (``adjoint``: through ``Uᵀ``)."""

    node: str
    adjoint: bool
    perm_in: tuple[int, ...]      # activation axes → (rows…, batch legs…, contracted leg)
    batch: int                    # the number of frames (the product of the frame's batch legs)
    perm_out: tuple[int, ...]     # (rows…, batch legs…, new leg) → the stage's exit order

    def run(self, frame: FrameModule, h: torch.Tensor) -> torch.Tensor:
        x = h.permute(self.perm_in)
        lead = x.shape[:-1]
        y = frame.apply_frame(x.reshape(-1, self.batch, x.shape[-1]), adjoint=self.adjoint)
        return y.reshape(*lead, y.shape[-1]).permute(self.perm_out)


def frame_application(node: Node, frame: object, act_inds: tuple[str, ...], exits: tuple[str, ...],
                      sizes: Mapping[str, int]) -> FrameApplication | None:
    """The :class:`FrameApplication` for a stage reading activation legs ``act_inds`` (batch axis first)
    with the single node ``node``, or ``None`` when the stage is better contracted."""
    if not isinstance(node, Unitary) or not isinstance(frame, FrameModule):
        return None
    cost = frame.apply_cost()
    if cost is None or cost >= APPLY_THRESHOLD:
        return None
    *bat, n_ind, k_ind = node.inds
    if k_ind in act_inds and n_ind not in act_inds:
        adjoint, leg_in, leg_out = False, k_ind, n_ind
    elif n_ind in act_inds and k_ind not in act_inds:
        adjoint, leg_in, leg_out = True, n_ind, k_ind
    else:
        return None
    if (len(set(act_inds)) != len(act_inds) or not all(b in act_inds and b in exits for b in bat)
            or set(exits) != (set(act_inds) - {leg_in}) | {leg_out} or len(exits) != len(act_inds)):
        return None
    rows = [i for i in act_inds if i != leg_in and i not in bat]
    order = rows + list(bat) + [leg_in]
    perm_in = tuple(act_inds.index(i) for i in order)
    out_order = rows + list(bat) + [leg_out]
    perm_out = tuple(out_order.index(e) for e in exits)
    return FrameApplication(node.name, adjoint, perm_in, math.prod(sizes[b] for b in bat), perm_out)
