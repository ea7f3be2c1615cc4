r"""Unitary nodes: ``N×K`` matrices with orthonormal columns (points of the Stiefel manifold
``V_K(N)``), produced from free parameters so that ``UᵀU = I`` holds by construction at every
step — never by a penalty, never by a truncated series.

Every parametrization takes a leading *batch* shape (a block-diagonal OFT is a batch of small
rotations) and returns ``(*batch, N, K)``. None of them forms an ``N×N`` matrix: each applies its
maps to the ``K`` columns of ``I_{N×K}`` directly.

==============  ====================================================  ===========================
name            construction                                          parameters (per batch item)
==============  ====================================================  ===========================
``pauli``       real two-design circuit (RY + CZ layers) on           ``n + 2L(⌊n/2⌋ + ⌊(n−1)/2⌋)``
                ``n = log₂ N`` qubits; any other ``N`` by a           for ``N = 2ⁿ``; see
                cosine–sine split (below)                             :func:`pauli_count`
``cayley``      ``(I − A)(I + A)⁻¹``, ``A`` skew of rank ≤ 2K′        ``N·K′``
``exp``         ``exp(A)``, same generator                            ``N·K′``
``taylor``      ``Σ_{j≤order} Aʲ/j!`` then a QR retraction            ``N·K′``
``householder`` ``H₁⋯H_{K′}``, ``Hⱼ = I − 2uⱼuⱼᵀ``                     ``N·K′``
``givens``      butterfly layers of disjoint 2×2 rotations            ``Σ_layers ⌊pairs⌋``
==============  ====================================================  ===========================

``K′`` is the *intrinsic rank* (option ``intrinsic_rank``, default ``K``): the generator of
``cayley``/``exp``/``taylor`` has ``K′`` columns, ``householder`` uses ``K′`` reflections.
``pauli`` and ``givens`` accept ``bits`` to quantize their angles to ``2^bits`` levels with a
straight-through estimator.

The skew generator is ``A = G E′ᵀ − E′ Gᵀ`` with ``G ∈ R^{N×K′}`` and ``E′ = I_{N×K′}``; writing
``A = P Rᵀ`` with ``P = [G, E′]``, ``R = [E′, −G]`` (``N×2K′``), the Woodbury identity gives
``(I + A)⁻¹ E = E − P (I + RᵀP)⁻¹ RᵀE`` and ``exp(A) E = E + P φ(RᵀP) RᵀE`` with
``φ(M) = Σ Mʲ/(j+1)!`` (the top-right block of ``exp([[M, I], [0, 0]])``): all ``O(N·K·K′)``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import cache
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class UnitaryParametrization:
    """A named map from free parameters onto ``V_K(N)``.

    Attributes:
        name: the name graphs use.
        num_parameters: closed-form count ``(n, k, **options) -> int`` per batch item.
        build: ``(n, k, batch, dtype, device, generator, **options) -> nn.Module`` whose
            ``forward()`` returns ``(*batch, n, k)``.
        options: the option names it accepts.
        identity_init: whether ``init="identity"`` is supported (the frame starts as ``I_{N×K}``).
    """

    name: str
    num_parameters: Callable[..., int]
    build: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    identity_init: bool = True


UNITARY_PARAMS: dict[str, UnitaryParametrization] = {}


def register_unitary(p: UnitaryParametrization) -> UnitaryParametrization:
    """Add a parametrization to the registry under ``p.name`` (replacing one of that name)."""
    UNITARY_PARAMS[p.name] = p
    return p


def _eye(n: int, k: int, g: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, k, dtype=like.dtype, device=like.device).expand(g, n, k)


def _angles(shape, init: str, dtype, device, generator) -> nn.Parameter:
    """Circuit angles: uniform on (−π, π), or zero for ``init="identity"``."""
    theta = torch.empty(*shape, dtype=dtype, device=device)
    with torch.no_grad():
        if init == "random":
            theta.uniform_(-math.pi, math.pi, generator=generator)
        else:
            theta.zero_()
    return nn.Parameter(theta)


def quantize_ste(theta: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Round angles to ``2^bits`` levels on the circle; the gradient passes straight through."""
    if not bits:
        return theta
    step = 2 * math.pi / (1 << bits)
    return theta + (torch.round(theta / step) * step - theta).detach()


# ------------------------------------------------------------------------------------------ pauli
def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def circuit_angle_count(n_qubits: int, layers: int) -> int:
    """Angles of the simplified two-design circuit on ``n_qubits``: one RY per qubit, then per
    layer two RYs per CZ pair on pairs (0,1),(2,3),… and (1,2),(3,4),…"""
    return n_qubits + 2 * layers * (n_qubits // 2 + max(n_qubits - 1, 0) // 2)


def pauli_count(n: int, layers: int = 1) -> int:
    """Parameters of the ``pauli`` frame of size ``n``: ``circuit_angle_count(log₂ n)`` for a power
    of two; otherwise, with ``n = n₁ + n₂`` (``n₁`` the largest power of two below ``n``),
    ``2·circuit(n₁) + pauli_count(n₂) + 1`` (circuits before and after one cosine–sine rotation on
    the power-of-two block, the remainder recursively after it). ``pauli_count(1) = 0``. At most
    ``log₂ N`` levels of ``O(L log N)`` angles: ``O(L·log² N)``."""
    if n == 1:
        return 0
    if _is_pow2(n):
        return circuit_angle_count(n.bit_length() - 1, layers)
    n1 = 1 << (n.bit_length() - 1)
    return 2 * circuit_angle_count(n1.bit_length() - 1, layers) + pauli_count(n - n1, layers) + 1


@cache
def _cz_signs_list(n_qubits: int, parity: int) -> tuple[float, ...]:
    # the diagonal of the product of CZ gates on pairs (q, q+1), q ≡ parity (mod 2); bit q of the row
    # index is qubit q (little-endian, as Qiskit)
    idx = torch.arange(1 << n_qubits)
    sign = torch.ones(1 << n_qubits)
    for q in range(parity, n_qubits - 1, 2):
        both = ((idx >> q) & 1) & ((idx >> (q + 1)) & 1)
        sign = sign * (1 - 2 * both)
    return tuple(sign.tolist())


_SIGN_CACHE: dict[tuple, torch.Tensor] = {}


def _cz_signs(n_qubits: int, parity: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (n_qubits, parity, dtype, device)
    t = _SIGN_CACHE.get(key)
    if t is None:
        t = torch.tensor(_cz_signs_list(n_qubits, parity), dtype=dtype, device=device).view(1, -1, 1)
        _SIGN_CACHE[key] = t
    return t


GROUP = 4  # qubits whose rotations are fused into one 2^5×2^5 Kronecker factor


def _ry_range(state: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lo: int) -> torch.Tensor:
    """Apply RY(θⱼ) on qubit ``lo + j`` for every j (angles given as ``cos(θ/2)``, ``sin(θ/2)`` of
    shape (G, m)) to every column of ``state`` (G, 2ⁿ, K).

    Rotations on distinct qubits commute, so up to :data:`GROUP` of them are fused into one
    Kronecker factor, built with a few batched products of 2×2 matrices, and applied with one
    batched matrix product: ``⌈m/GROUP⌉`` state-sized operations instead of ``m``.
    """
    g, dim, k = state.shape
    m = cos.shape[1]
    rot = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)  # (G, m, 2, 2)
    for start in range(0, m, GROUP):
        size = min(GROUP, m - start)
        mat = rot[:, start]
        for j in range(1, size):  # higher qubits are the more significant factor
            r = rot[:, start + j]
            d = mat.shape[-1]
            mat = (r[:, :, None, :, None] * mat[:, None, :, None, :]).reshape(g, 2 * d, 2 * d)
        q0 = lo + start
        view = state.reshape(g, dim >> (q0 + size), 1 << size, (1 << q0) * k)
        state = torch.matmul(mat.unsqueeze(1), view).reshape(g, dim, k)
    return state


def apply_circuit(state: torch.Tensor, theta: torch.Tensor, n_qubits: int, layers: int) -> torch.Tensor:
    """Apply the two-design circuit (angles ``theta`` of shape (G, count)) to ``state`` (G, 2ⁿ, K).

    Order (as in Quantum-PEFT): RY on every qubit; then per layer CZ on pairs (0,1),(2,3),… each
    followed by RY on both its qubits, then CZ on pairs (1,2),(3,4),… likewise. CZs on disjoint
    pairs commute, so each half-layer's CZs are applied as one ±1 diagonal, and its RYs — on the
    contiguous qubits 0…2⌊n/2⌋−1, or 1…2⌊(n−1)/2⌋ — as fused Kronecker factors.
    """
    half = theta / 2
    cos, sin = torch.cos(half), torch.sin(half)
    state = _ry_range(state, cos[:, :n_qubits], sin[:, :n_qubits], 0)
    a = n_qubits
    for _ in range(layers):
        for parity in (0, 1):
            m = 2 * ((n_qubits - parity) // 2)
            if m == 0:
                continue
            state = state * _cz_signs(n_qubits, parity, state.dtype, state.device)
            state = _ry_range(state, cos[:, a:a + m], sin[:, a:a + m], parity)
            a += m
    return state


class FrameScope:
    """Frames of equal shape and options inside one scope are computed in one batched pass.

    ``inject`` gives every adapted model one scope, so the ``U`` frames of all layers of a width,
    say, are materialized together: one set of state-sized operations per distinct shape and step,
    instead of one per layer. A frame's result is reused by the other members of its group until
    the member that asks for it has already had it (a new forward pass), a parameter changed, or
    the grad mode changed; then the whole group is recomputed. Copies of a model get a fresh scope.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple, _FrameGroup] = {}
        self._members: weakref.WeakSet = weakref.WeakSet()

    def __deepcopy__(self, memo) -> FrameScope:
        return FrameScope()  # members of a copy register again on their first forward

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def register(self, member: FrameModule) -> None:
        """Make ``member`` part of this scope (done when the module is built)."""
        self._members.add(member)

    def frame(self, member: FrameModule) -> torch.Tensor:
        if member not in self._members:
            # a module this scope has not seen (e.g. in a deep copy, whose scope starts empty): compute
            # it alone this time and batch it with its peers from the next forward on, instead of
            # recomputing a growing group once per newcomer
            self._members.add(member)
            self._groups.clear()
            return member._frames(member.flat_param()).reshape(*member.batch, member.n, member.k)
        p = member.param()
        key = (member.batch_key(), p.dtype, p.device)
        group = self._groups.get(key)
        if group is None:
            # every registered module of the same shape, options, dtype and device joins at once
            group = self._groups[key] = _FrameGroup()
            for m in self._members:
                q = m.param()
                if (m.batch_key(), q.dtype, q.device) == key:
                    group.members.add(m)
        return group.get(member)


class _FrameGroup:
    def __init__(self) -> None:
        self.members: weakref.WeakSet = weakref.WeakSet()
        self.cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.consumed: weakref.WeakSet = weakref.WeakSet()
        self.grad = False

    def get(self, m: FrameModule) -> torch.Tensor:
        if m not in self.members:
            self.members.add(m)
            self.cache = weakref.WeakKeyDictionary()
        entry = self.cache.get(m)
        if (entry is None or m in self.consumed or entry[1] != m.param()._version
                or self.grad != torch.is_grad_enabled()):
            self._recompute()
            entry = self.cache[m]
        self.consumed.add(m)
        return entry[0]

    def _recompute(self) -> None:
        members = list(self.members)
        flats = [m.flat_param() for m in members]
        frames = members[0]._frames(torch.cat(flats) if len(flats) > 1 else flats[0])
        self.cache = weakref.WeakKeyDictionary()
        for m, f in zip(members, frames.split([x.shape[0] for x in flats])):
            self.cache[m] = (f.reshape(*m.batch, m.n, m.k), m.param()._version)
        self.consumed = weakref.WeakSet()
        self.grad = torch.is_grad_enabled()


class FrameModule(nn.Module):
    """Base of the parametrizations: one trainable tensor of shape ``(*batch, *tail)`` mapped by
    :meth:`_compute` to frames ``(G, N, K)``. With a :class:`FrameScope` (``self.scope``) frames of
    equal shape across modules are computed together."""

    n: int
    k: int
    batch: tuple[int, ...]

    def __init__(self, n: int, k: int, batch=()) -> None:
        super().__init__()
        self.n, self.k, self.batch = n, k, tuple(batch)
        self.__dict__["scope"] = None  # a plain reference: not a submodule, not state

    def param(self) -> torch.Tensor:
        raise NotImplementedError

    def options_key(self) -> tuple:
        return ()

    def batch_key(self) -> tuple:
        p = self.param()
        return (type(self), self.n, self.k, tuple(p.shape[len(self.batch):])) + self.options_key()

    def flat_param(self) -> torch.Tensor:
        p = self.param()
        return p.reshape(math.prod(self.batch), *p.shape[len(self.batch):])

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _frames(self, flat: torch.Tensor) -> torch.Tensor:
        # bfloat16 / float16 parameters: the frame is computed in float32 (orthonormal to ~1e-7) and
        # only the result is rounded to the parameters' dtype
        if flat.dtype in (torch.bfloat16, torch.float16):
            return self._compute(flat.float()).to(flat.dtype)
        return self._compute(flat)

    def forward(self) -> torch.Tensor:
        if self.scope is not None:
            return self.scope.frame(self)
        return self._frames(self.flat_param()).reshape(*self.batch, self.n, self.k)


class _AngleFrame(FrameModule):
    """A frame whose free parameters are circuit angles ``theta``."""

    def param(self) -> torch.Tensor:
        return self.theta


class PauliFrame(_AngleFrame):
    """``U = Q(θ)[:, :K]`` with ``Q(θ)`` the real two-design circuit (Quantum-PEFT, §3).

    For ``N = 2ⁿ`` this is exactly the circuit. For other ``N`` — the paper assembles such
    unitaries with generalized gates and the quantum Shannon decomposition — tnpeft uses the
    cosine–sine split ``Q_N = (A₁ ⊕ A₂) · CS(φ) · (B₁ ⊕ I)`` with ``N = N₁ + N₂``, ``N₁`` the
    largest power of two below ``N``: ``A₁, B₁`` are circuits on ``log₂ N₁`` qubits, ``A₂`` is
    ``Q_{N₂}`` recursively, and ``CS(φ)`` rotates row ``i`` with row ``N₁ + i`` (``i < N₂``) by one
    shared angle. (A second recursive factor ``B₂`` would act only on rows the first ``K ≤ N₁``
    columns of ``I`` leave at zero, and would make the count grow linearly, so it is left out.)
    Every factor is orthogonal, so ``Q_N`` is, exactly; the parameter count stays
    ``O(L log² N)`` (:func:`pauli_count`) and materializing costs ``O(N·K·L·log N)``.
    """

    def __init__(self, n: int, k: int, batch: tuple[int, ...] = (), layers: int = 1, bits: int | None = None,
                 init: str = "random", dtype=None, device=None, generator=None):
        super().__init__(n, k, batch)
        self.layers, self.bits = layers, bits
        self.theta = _angles((*self.batch, pauli_count(n, layers)), init, dtype, device, generator)

    def _q(self, state: torch.Tensor, theta: torch.Tensor, n: int) -> torch.Tensor:
        if n == 1:
            return state
        if _is_pow2(n):
            return apply_circuit(state, theta, n.bit_length() - 1, self.layers)
        n1 = 1 << (n.bit_length() - 1)
        n2 = n - n1
        c1 = circuit_angle_count(n1.bit_length() - 1, self.layers)
        b1, phi, a1, a2 = theta[:, :c1], theta[:, c1], theta[:, c1 + 1:2 * c1 + 1], theta[:, 2 * c1 + 1:]
        top = apply_circuit(state[:, :n1], b1, n1.bit_length() - 1, self.layers)
        bot = state[:, n1:]
        c = torch.cos(phi).view(-1, 1, 1)
        s = torch.sin(phi).view(-1, 1, 1)
        t = top[:, :n2]
        top = torch.cat((c * t - s * bot, top[:, n2:]), dim=1)
        bot = s * t + c * bot
        top = apply_circuit(top, a1, n1.bit_length() - 1, self.layers)
        bot = self._q(bot, a2, n2)
        return torch.cat((top, bot), dim=1)

    def options_key(self) -> tuple:
        return (self.layers, self.bits)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        return self._q(_eye(self.n, self.k, theta.shape[0], theta), theta, self.n)


# ------------------------------------------------------------------ generator-based (skew A)
class _SkewFrame(FrameModule):
    """Shared machinery: a generator ``G ∈ R^{N×K′}`` defining ``A = G E′ᵀ − E′ Gᵀ``."""

    def __init__(self, n: int, k: int, batch=(), intrinsic_rank: int | None = None, init: str = "random",
                 dtype=None, device=None, generator=None):
        super().__init__(n, k, batch)
        self.kk = min(intrinsic_rank or k, n)
        g = torch.empty(*self.batch, n, self.kk, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "random":
                g.normal_(0.0, 1.0 / math.sqrt(n), generator=generator)
            else:
                g.zero_()
        self.generator = nn.Parameter(g)

    def param(self) -> torch.Tensor:
        return self.generator

    def _factors(self, g: torch.Tensor):
        e = _eye(self.n, self.kk, g.shape[0], g)
        p = torch.cat((g, e), dim=2)                 # (G, N, 2K′)
        r = torch.cat((e, -g), dim=2)                # (G, N, 2K′)
        return p, r

    @staticmethod
    def _upcast(p, r):
        # RᵀP is far from normal: for large generators the low-rank formulas cancel badly in float32,
        # so they run in float64 (the operands are N×2K′: cheap) and the frame is cast back
        if p.dtype in (torch.float32, torch.float16, torch.bfloat16) and p.device.type != "mps":
            return p.double(), r.double()
        return p, r

    def _apply_a(self, p, r, v):
        return p @ (r.transpose(1, 2) @ v)


class CayleyFrame(_SkewFrame):
    """``U = (I − A)(I + A)⁻¹ I_{N×K}``: orthogonal for every skew ``A`` (``I + A`` is always
    invertible), computed with the Woodbury identity in ``O(N·K·K′)`` — or, when ``N ≤ 2K′`` (small
    square blocks such as OFT's), with one dense ``N×N`` solve, which is then cheaper."""

    def _dense(self, flat: torch.Tensor) -> torch.Tensor:
        g = flat.double() if flat.dtype != torch.float64 and flat.device.type != "mps" else flat
        e = _eye(self.n, self.kk, g.shape[0], g)
        a = g @ e.transpose(1, 2) - e @ g.transpose(1, 2)           # (G, N, N), skew
        eye = torch.eye(self.n, dtype=g.dtype, device=g.device)
        q = torch.linalg.solve(eye + a, (eye - a)[:, :, :self.k])   # (I + A)⁻¹(I − A) = (I − A)(I + A)⁻¹
        return q.to(flat.dtype)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        if self.n <= 2 * self.kk:
            return self._dense(flat)
        p, r = self._factors(flat)
        out_dtype = p.dtype
        p, r = self._upcast(p, r)
        e = _eye(self.n, self.k, p.shape[0], p)
        m = torch.eye(p.shape[2], dtype=p.dtype, device=p.device) + r.transpose(1, 2) @ p
        y = e - p @ torch.linalg.solve(m, r[:, :self.k].transpose(1, 2))
        return (y - self._apply_a(p, r, y)).to(out_dtype)


class ExpFrame(_SkewFrame):
    """``U = exp(A) I_{N×K}`` = ``E + P φ(RᵀP) RᵀE`` (exact: ``φ`` from one small matrix exponential)."""

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        p, r = self._factors(flat)
        out_dtype = p.dtype
        p, r = self._upcast(p, r)
        g, _, two_k = p.shape
        m = r.transpose(1, 2) @ p
        block = torch.zeros(g, 2 * two_k, 2 * two_k, dtype=p.dtype, device=p.device)
        block[:, :two_k, :two_k] = m
        block[:, :two_k, two_k:] = torch.eye(two_k, dtype=p.dtype, device=p.device)
        phi = torch.linalg.matrix_exp(block)[:, :two_k, two_k:]
        e = _eye(self.n, self.k, g, p)
        return (e + p @ (phi @ r[:, :self.k].transpose(1, 2))).to(out_dtype)


class TaylorFrame(_SkewFrame):
    """The truncated series ``T = Σ_{j≤order} Aʲ E / j!`` — which alone is *not* orthogonal — pulled
    back onto the manifold by a QR retraction (``U = Q`` with ``diag(R) > 0``). ``order`` defaults to 2."""

    def __init__(self, n, k, batch=(), intrinsic_rank=None, order: int = 2, init="random", dtype=None, device=None,
                 generator=None):
        super().__init__(n, k, batch, intrinsic_rank, init, dtype, device, generator)
        self.order = order

    def options_key(self) -> tuple:
        return (self.order,)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        p, r = self._factors(flat)
        v = _eye(self.n, self.k, p.shape[0], p)
        t = v
        for j in range(1, self.order + 1):
            v = self._apply_a(p, r, v) / j
            t = t + v
        q, rr = torch.linalg.qr(t)
        sign = torch.sign(torch.diagonal(rr, dim1=1, dim2=2))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return q * sign.unsqueeze(1)


class HouseholderFrame(FrameModule):
    r"""``U = H_1 ⋯ H_{K′} I_{N×K}``, ``H_j = I − 2 u_j u_jᵀ``, ``u_j = v_j / ‖v_j‖`` (a zero
    ``v_j`` gives ``H_j = I``). Parameters ``N·K′``; cost ``O(N·K·K′)``."""

    def __init__(self, n: int, k: int, batch=(), intrinsic_rank: int | None = None, init: str = "random",
                 dtype=None, device=None, generator=None):
        super().__init__(n, k, batch)
        m = min(intrinsic_rank or k, n)
        v = torch.empty(*self.batch, m, n, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "random":
                v.normal_(0.0, 1.0, generator=generator)
            else:
                v.zero_()
        self.vectors = nn.Parameter(v)

    def param(self) -> torch.Tensor:
        return self.vectors

    def _compute(self, v: torch.Tensor) -> torch.Tensor:
        norm = v.norm(dim=2, keepdim=True)
        u = torch.where(norm > 0, v / norm.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))
        m = _eye(self.n, self.k, v.shape[0], v)
        for j in range(v.shape[1] - 1, -1, -1):
            uj = u[:, j].unsqueeze(2)                       # (G, N, 1)
            m = m - 2.0 * uj @ (uj.transpose(1, 2) @ m)
        return m


@cache
def _butterfly_pairs(n: int, layers: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    depth = max(1, (n - 1).bit_length())
    out = []
    for layer in range(layers):
        stride = 1 << (layer % depth)
        a = tuple(i for i in range(n) if (i // stride) % 2 == 0 and i + stride < n)
        out.append((a, tuple(i + stride for i in a)))
    return tuple(out)


def givens_count(n: int, layers: int | None = None) -> int:
    layers = layers or max(1, (n - 1).bit_length())
    return sum(len(a) for a, _ in _butterfly_pairs(n, layers))


class GivensFrame(_AngleFrame):
    """Butterfly layers of disjoint Givens rotations: layer ``l`` rotates rows ``i`` and
    ``i + 2^(l mod ⌈log₂N⌉)``. ``⌈log₂ N⌉`` layers (the default) connect every row with every other,
    as in an FFT. Exactly orthogonal; ``O(N·K)`` per layer; never a dense permutation."""

    def __init__(self, n: int, k: int, batch=(), layers: int | None = None, bits: int | None = None,
                 init: str = "random", dtype=None, device=None, generator=None):
        super().__init__(n, k, batch)
        self.bits = bits
        self.n_layers = layers or max(1, (n - 1).bit_length())
        pairs = _butterfly_pairs(n, self.n_layers)
        for i, (a, b) in enumerate(pairs):
            self.register_buffer(f"_a{i}", torch.tensor(a, dtype=torch.long, device=device), persistent=False)
            self.register_buffer(f"_b{i}", torch.tensor(b, dtype=torch.long, device=device), persistent=False)
        self.theta = _angles((*self.batch, sum(len(a) for a, _ in pairs)), init, dtype, device, generator)

    def options_key(self) -> tuple:
        return (self.n_layers, self.bits)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        m = _eye(self.n, self.k, theta.shape[0], theta)
        off = 0
        for i in range(self.n_layers):
            ia, ib = getattr(self, f"_a{i}"), getattr(self, f"_b{i}")
            if ia.numel() == 0:
                continue
            t = theta[:, off:off + ia.numel()].unsqueeze(2)
            off += ia.numel()
            c, s = torch.cos(t), torch.sin(t)
            xa, xb = m[:, ia], m[:, ib]
            m = m.index_copy(1, ia, c * xa - s * xb).index_copy(1, ib, s * xa + c * xb)
        return m


def _build(cls):
    return lambda n, k, batch=(), dtype=None, device=None, generator=None, **o: cls(
        n, k, batch, dtype=dtype, device=device, generator=generator, **o)


register_unitary(UnitaryParametrization("pauli", lambda n, k, layers=1, bits=None, init="random": pauli_count(n, layers),
                                        _build(PauliFrame), ("layers", "bits", "init"), identity_init=False))
for _name, _cls, _opts in (("cayley", CayleyFrame, ("intrinsic_rank", "init")),
                           ("exp", ExpFrame, ("intrinsic_rank", "init")),
                           ("taylor", TaylorFrame, ("intrinsic_rank", "order", "init")),
                           ("householder", HouseholderFrame, ("intrinsic_rank", "init"))):
    register_unitary(UnitaryParametrization(
        _name, lambda n, k, intrinsic_rank=None, order=2, init="random": n * min(intrinsic_rank or k, n),
        _build(_cls), _opts))
register_unitary(UnitaryParametrization("givens", lambda n, k, layers=None, bits=None, init="random": givens_count(n, layers),
                                        _build(GivensFrame), ("layers", "bits", "init")))

__all__ = ["UNITARY_PARAMS", "UnitaryParametrization", "register_unitary", "FrameScope", "FrameModule", "PauliFrame", "CayleyFrame", "ExpFrame",
           "TaylorFrame", "HouseholderFrame", "GivensFrame", "pauli_count", "givens_count", "circuit_angle_count",
           "apply_circuit", "quantize_ste"]
