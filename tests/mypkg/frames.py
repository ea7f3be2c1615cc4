"""A unitary parametrization of one's own: the frame is stored as it is (an N×K matrix kept
orthonormal by whoever trains it, e.g. with a retraction after each step). Importing this module
registers it as ``param="stored"``."""

import torch

from tnpeft.params.unitary import FrameModule, UnitaryParametrization, register_unitary


class StoredFrame(FrameModule):
    def __init__(self, n, k, batch=(), dtype=None, device=None, rng=None):
        super().__init__(n, k, batch)
        a = torch.randn(*batch, n, k, dtype=torch.float64, generator=rng)
        q, _ = torch.linalg.qr(a)            # start on the Stiefel manifold
        self.matrix = torch.nn.Parameter(q.to(dtype or torch.get_default_dtype()).to(device))

    def free_tensor(self):
        return self.matrix

    def _compute(self, flat):
        return flat


STORED = UnitaryParametrization("stored", lambda n, k: n * k,
                                lambda n, k, batch=(), **kw: StoredFrame(n, k, batch, **kw))
register_unitary(STORED)


class QRFrame(FrameModule):
    """The Q factor of a free N×K matrix A (signs fixed so that diag(R) > 0): orthonormal columns
    for every A of full rank, at O(N·K²) per frame."""

    def __init__(self, n, k, batch=(), dtype=None, device=None, rng=None, init="random"):
        super().__init__(n, k, batch)
        if init == "identity":
            a = torch.eye(n, k).expand(*batch, n, k).clone()
        else:
            a = torch.randn(*batch, n, k, generator=rng)
        self.a = torch.nn.Parameter(a.to(dtype=dtype or torch.get_default_dtype(), device=device))

    def free_tensor(self):                 # the one trainable tensor, (*batch, N, K)
        return self.a

    def _compute(self, flat):        # (G, N, K) → frames (G, N, K)
        q, r = torch.linalg.qr(flat)
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


QR = UnitaryParametrization("qr", num_parameters=lambda n, k, init="random": n * k,
                            build=lambda n, k, batch=(), **kw: QRFrame(n, k, batch, **kw),
                            options=("init",), identity_init=True)
