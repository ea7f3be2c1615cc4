"""Compile unitary nodes, QNN nodes and QPA hyper-networks to Qiskit ``QuantumCircuit`` objects.

Three routes, chosen per node:

- a ``pauli`` unitary node of any size ``N`` becomes exactly its circuit on ``⌈log₂ N⌉`` qubits,
  from the frame's own description (:mod:`tnpeft.circuits.frames`): for ``N = 2ⁿ`` an ``RY``
  on every qubit, then per layer ``CZ`` + ``RY`` on the pairs (0,1),(2,3),… and (1,2),(3,4),…; for
  any other ``N`` the cosine–sine construction, whose factors are controlled on the top qubit and
  whose rotation ``CS(φ)`` is controlled on the lower bits being below ``N₂`` — with the node's
  angles (quantized first when the node has ``bits``);
- a ``givens`` node becomes its butterfly: per layer one uniformly controlled ``RY`` (``UCRYGate``);
- every other unitary node (``cayley``, ``exp``, ``taylor``, ``householder``) is synthesized
  exactly: its ``N×K`` frame is completed to an ``N×N`` orthogonal matrix, embedded as the top-left
  block of the ``2ⁿ×2ⁿ`` identity (``n = ⌈log₂ N⌉``) and decomposed by
  ``qiskit.synthesis.qs_decomposition`` (:mod:`tnpeft.quantum.synthesis`), up to
  ``max_synthesis_qubits``;
- a ``qnn`` nonlinear node (QWTHN) and a ``qpa`` hyper-network become their real circuits
  (:mod:`tnpeft.circuits.circuit`); a QNN's data inputs are the ``Parameter`` vector ``x``.

In every case basis state ``|i⟩`` is Qiskit's: qubit ``q`` is bit ``q`` of ``i`` (little-endian),
so ``Operator(to_qiskit(module, name)).data[:N, :K]`` *is* ``module.tensor(name)``: column ``j`` of
the node is the circuit applied to ``|j⟩``, row ``i`` its amplitude on ``|i⟩``.

Batched unitary nodes (indices ``(*batch, row, col)``, e.g. OFT's block rotations) hold one frame
per batch element: :func:`to_qiskit` on such a node returns a list of circuits in row-major batch
order (or one circuit with ``index=``), and a graph's dictionary names them ``"R1[0]"``,
``"R1[1]"``, … (``"R2[i,j]"`` for two batch indices).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, Union, cast, overload

import numpy as np
import torch

from tnpeft.circuits.circuit import Circuit, Gate
from tnpeft.circuits.frames import givens_circuit, pauli_frame_circuit
from tnpeft.errors import ConfigError, GraphError
from tnpeft.graph import Graph, Nonlinear, Unitary
from tnpeft.params import UNITARY_PARAMS
from tnpeft.params.hypernetworks import QPAHyperNetwork
from tnpeft.params.qnn import QNNMap
from tnpeft.params.unitary import FrameModule, GivensFrame, PauliFrame, butterfly_pairs
from tnpeft.quantum.synthesis import MAX_SYNTHESIS_QUBITS, synthesize_frame
from tnpeft.runtime import GraphModule
from tnpeft.storage import resolve_graph_module

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit

Source = Union[Graph, GraphModule, torch.nn.Module]


# ------------------------------------------------------------------------------ circuits
def circuit_to_qiskit(circuit: Circuit, theta: Any, *, parameters: bool = False, name: str | None = None,
                      input_name: str = "x", multiplex: bool = False) -> QuantumCircuit:
    """A :class:`~tnpeft.circuits.circuit.Circuit` as a Qiskit circuit with the same gates on the
    same qubits.

    ``ry`` angles ``("param", k)`` take ``theta[k]`` (bound floats), or — with ``parameters=True`` —
    the ``Parameter`` ``theta[k]`` of a ``ParameterVector("theta")`` (the values are then kept in
    ``circuit.metadata["theta"]``), times the gate's ``factor``. Angles ``("input", j)`` are always
    the ``Parameter`` ``x[j]`` of a ``ParameterVector(input_name)``: data to bind before running.
    A controlled gate becomes Qiskit's controlled gate with the same control state
    (``RYGate(θ).control(k, ctrl_state=…)``, ``CZGate().control(k, ctrl_state=…)``). With
    ``multiplex`` (bound angles only), a run of ``RY`` gates on one target, each controlled on all
    the other qubits, becomes one uniformly controlled ``UCRYGate`` — a Givens butterfly layer in
    ``2^{n−1}`` CX instead of one multi-controlled rotation per angle.
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit.circuit.library import CXGate, CZGate, RYGate, UCRYGate

    values = [float(v) for v in torch.as_tensor(theta).detach().reshape(-1).to(torch.float64).tolist()]
    if len(values) != circuit.n_params:
        raise ConfigError(f"the circuit has {circuit.n_params} angles, got {len(values)}", field="theta")
    pv = ParameterVector("theta", circuit.n_params) if parameters and circuit.n_params else None
    xv = ParameterVector(input_name, circuit.n_inputs) if circuit.n_inputs else None
    qc = QuantumCircuit(circuit.n_qubits, name=name or "circuit")
    n = circuit.n_qubits

    def angle_of(g: Gate) -> Any:
        assert g.angle is not None   # an RY gate's
        src, k = g.angle
        a = xv[k] if src == "input" and xv is not None else (pv[k] if pv is not None else values[k])
        return a * g.factor if g.factor != 1.0 else a

    gates = list(circuit.gates)
    i = 0
    while i < len(gates):
        g = gates[i]
        full = g.name == "ry" and len(g.controls) == n - 1 and n > 1 and g.angle is not None and g.angle[0] == "param"
        if multiplex and pv is None and full:
            t, j = g.qubits[0], i
            controls = [q for q in range(n) if q != t]
            table = [0.0] * (1 << (n - 1))
            while j < len(gates) and gates[j].name == "ry" and gates[j].qubits[0] == t \
                    and len(gates[j].controls) == n - 1 and (gates[j].angle or ("",))[0] == "param":
                ctrl = dict(gates[j].controls)
                table[sum(ctrl[q] << p for p, q in enumerate(controls))] += angle_of(gates[j])
                j += 1
            qc.append(UCRYGate(table), [t] + controls)
            i = j
            continue
        if g.controls:
            qs = list(g.control_qubits)
            state = sum(v << p for p, (_, v) in enumerate(g.controls))
            base = RYGate(angle_of(g)) if g.name == "ry" else CZGate() if g.name == "cz" else CXGate()
            qc.append(base.control(len(qs), ctrl_state=state), qs + list(g.qubits))
        elif g.name == "ry":
            qc.ry(angle_of(g), g.qubits[0])
        elif g.name == "cz":
            qc.cz(*g.qubits)
        else:
            qc.cx(*g.qubits)
        i += 1
    qc.metadata = {"qubits": circuit.n_qubits, "inputs": circuit.n_inputs}
    if pv is not None:
        qc.metadata["theta"] = values
    return qc


def frame_matrices(module: torch.nn.Module) -> np.ndarray:
    """The frames of a unitary node's parametrization as float64, shape ``(G, N, K)`` with ``G`` the
    flattened batch (row-major). Built-in parametrizations are re-evaluated in float64 from their
    parameters; another module's ``forward()`` output is cast."""
    with torch.no_grad():
        if isinstance(module, FrameModule):
            if module.free_tensor().device.type == "meta":
                raise ConfigError("the node's values live on the meta device: load or initialise them first",
                                  field="device")
            out = module.frames_float64()
        else:
            out = module()
            out = out.reshape(-1, *out.shape[-2:]).to(torch.float64)
    return out.detach().cpu().numpy()


def frame_circuit(module: FrameModule) -> tuple[Circuit, str] | None:
    """The circuit description of a circuit-shaped frame (``pauli`` of any size, ``givens``) and
    its method name; ``None`` for frames that have no circuit of their own."""
    if isinstance(module, PauliFrame):
        return pauli_frame_circuit(module.rows, module.layers, module.k), "pauli"
    if isinstance(module, GivensFrame):
        return givens_circuit(module.n, butterfly_pairs(module.n, module.n_layers)), "givens"
    return None


def _frame_circuits(module: torch.nn.Module, node: str | None, param: str | None, *, parameters: bool,
                    max_synthesis_qubits: int) -> list[QuantumCircuit]:
    """One circuit per batch element of a unitary node's parametrization module."""
    label = node or "frame"
    out = []
    described = frame_circuit(module) if isinstance(module, FrameModule) else None
    if described is not None:
        circ, method = described
        frame = cast(Union[PauliFrame, GivensFrame], module)   # the frames with a circuit of their own
        n, k = getattr(frame, "rows", frame.n), frame.k        # a pow2 frame's circuit has its padded rows
        with torch.no_grad():
            angles = frame.angles().detach().to(torch.float64).cpu()
        for b, theta in enumerate(angles):
            qc = circuit_to_qiskit(circ, theta, parameters=parameters, name=label, multiplex=method == "givens")
            qc.metadata.update(method=method, bits=module.bits,
                               **({"layers": module.layers} if method == "pauli" else {"layers": module.n_layers}))
            if getattr(module, "pow2", False):
                qc.metadata.update(pow2=True, frame_rows=module.n)
            out.append((qc, b))
    else:
        frames = frame_matrices(module)
        n, k = frames.shape[1:]
        for b, u in enumerate(frames):
            qc = synthesize_frame(u, name=label, max_qubits=max_synthesis_qubits)
            qc.metadata = {"qubits": qc.num_qubits, "inputs": 0, "method": "synthesis"}
            out.append((qc, b))
    batch = tuple(getattr(module, "batch", ()))
    index = list(itertools.product(*(range(s) for s in batch))) if batch else [()]
    result = []
    for qc, b in out:
        qc.metadata.update(kind="unitary", node=node, param=param, rows=n, cols=k, batch_index=list(index[b]))
        result.append(qc)
    return result


def _qnn_circuit(module: QNNMap, node: str | None, *, parameters: bool) -> QuantumCircuit:
    qc = circuit_to_qiskit(module.circuit, module.theta, parameters=parameters, name=node or "qnn")
    o = module.opts
    qc.metadata.update(kind="qnn", node=node, method="qnn", readout=o.readout, fusion=o.fusion, layers=o.layers,
                       entangler=o.entangler, in_size=module.in_size, out_size=module.out_size)
    return qc


def _qpa_circuit(module: QPAHyperNetwork, name: str | None, outputs: tuple[str, ...] | None, *,
                 parameters: bool) -> QuantumCircuit:
    qc = circuit_to_qiskit(module.circuit, module.theta, parameters=parameters, name=name or "qpa")
    s = module.shape
    qc.metadata.update(kind="qpa", node=name, method="qpa", n_chunks=s.n_chunks, chunk_size=s.chunk_size,
                       layers=s.layers, preset=s.preset, outputs=list(outputs) if outputs else None)
    return qc


# ------------------------------------------------------------------------------ graphs
def circuit_names(source: Graph | GraphModule) -> list[str]:
    """The names of a graph's compilable nodes and hyper-networks, in graph order: unitary nodes,
    ``qnn`` nonlinear nodes (generated nodes excluded) and hyper-networks."""
    graph, _ = resolve_graph_module(source)
    names = [n for n, nd in graph.nodes.items()
             if (isinstance(nd, Unitary) and n not in graph.generated and UNITARY_PARAMS[nd.param].exact)
             or (isinstance(nd, Nonlinear) and nd.fn == "qnn")]
    return names + list(graph.hypernetworks)


def _compile_named(graph: Graph, module: GraphModule, name: str, *, parameters: bool,
                   max_synthesis_qubits: int) -> list[QuantumCircuit]:
    if name in graph.hypernetworks:
        gen = graph.hypernetworks[name]
        if gen.kind != "qpa":
            raise GraphError(f"hyper-network {name!r} of kind {gen.kind!r} has no circuit", node=name)
        return [_qpa_circuit(cast(QPAHyperNetwork, module.get_submodule(name)), name, gen.outputs, parameters=parameters)]
    if name not in graph.nodes:
        raise GraphError(f"no node or hyper-network named {name!r}; the graph has nodes {list(graph.nodes)} and "
                         f"hyper-networks {list(graph.hypernetworks)}", node=name)
    nd = graph.nodes[name]
    if isinstance(nd, Unitary) and not UNITARY_PARAMS[nd.param].exact:
        raise GraphError(f"node {name!r} ({nd.param}) only approximates an orthogonal matrix (a truncated series): it "
                         "has no circuit", node=name)
    if isinstance(nd, Unitary) and name not in graph.generated:
        return _frame_circuits(module.get_submodule(name), name, nd.param, parameters=parameters,
                               max_synthesis_qubits=max_synthesis_qubits)
    if isinstance(nd, Nonlinear) and nd.fn == "qnn":
        return [_qnn_circuit(cast(QNNMap, module.get_submodule(name)), name, parameters=parameters)]
    what = f"nonlinear node with fn {nd.fn!r}" if isinstance(nd, Nonlinear) else f"{nd.kind} node"
    raise GraphError(f"node {name!r} is a {what}; only unitary nodes, 'qnn' nonlinear nodes and hyper-networks compile "
                     f"to circuits (this graph's are {circuit_names(graph)})", node=name)


def batch_key(name: str, index: list[int] | tuple[int, ...]) -> str:
    """The dictionary key of one batch element: ``"R1[0]"``, ``"R2[1,3]"`` (``name`` when unbatched)."""
    return f"{name}[{','.join(str(i) for i in index)}]" if len(index) else name


@overload
def to_qiskit(source: Any, node: str, *, index: int | tuple[int, ...] | None = None, parameters: bool = False,
              max_synthesis_qubits: int = MAX_SYNTHESIS_QUBITS) -> QuantumCircuit | list[QuantumCircuit]: ...


@overload
def to_qiskit(source: Any, node: None = None, *, index: int | tuple[int, ...] | None = None, parameters: bool = False,
              max_synthesis_qubits: int = MAX_SYNTHESIS_QUBITS
              ) -> QuantumCircuit | list[QuantumCircuit] | dict[str, QuantumCircuit]: ...


def to_qiskit(source: Any, node: str | None = None, *, index: int | tuple[int, ...] | None = None,
              parameters: bool = False,
              max_synthesis_qubits: int = MAX_SYNTHESIS_QUBITS) -> QuantumCircuit | list[QuantumCircuit] | dict[str, QuantumCircuit]:
    """Compile to Qiskit circuits.

    Args:
        source: a :class:`~tnpeft.Graph` or :class:`~tnpeft.GraphModule` (an injected layer's
            ``layer.tn_adapters[name]``), or a single parametrization module (a unitary frame such
            as ``GraphModule(graph).U``, a ``qnn`` node's ``QNNMap``, a ``QPAHyperNetwork``).
        node: with a graph, the node or hyper-network to compile; without, every compilable one.
        index: for a batched unitary node, the batch element (flat row-major ``int`` or a tuple).
        parameters: emit the trainable angles as a ``ParameterVector("theta")`` instead of bound
            values (values in ``circuit.metadata["theta"]``). Synthesized circuits have no angles to
            expose and are always bound. QNN data inputs are always ``Parameter``s ``x[j]``.
        max_synthesis_qubits: refuse (``ConfigError``) to synthesize frames on more qubits.

    Returns:
        a graph without ``node``: ``{name: QuantumCircuit}`` for every unitary node, ``qnn`` node
        and hyper-network (batched nodes as ``"name[i]"`` keys; an empty dict if it has none); with
        ``node`` or a module: one circuit, or a list over the batch of a batched unitary node
        (one circuit with ``index``).

    Each circuit's ``metadata`` records what it is (``kind``: ``unitary``/``qnn``/``qpa``;
    ``method``: ``pauli``/``synthesis``/``qnn``/``qpa``; rows ``N``, columns ``K``, batch index, …).
    """
    if isinstance(max_synthesis_qubits, bool) or not isinstance(max_synthesis_qubits, int) or max_synthesis_qubits < 1:
        raise ConfigError(f"max_synthesis_qubits must be a positive integer, got {max_synthesis_qubits!r}",
                          field="max_synthesis_qubits")
    kw: dict[str, Any] = {"parameters": parameters, "max_synthesis_qubits": max_synthesis_qubits}
    if isinstance(source, (Graph, GraphModule)):
        graph, module = resolve_graph_module(source)
        if node is None:
            if index is not None:
                raise ConfigError("index selects a batch element of one node: give node= too", field="index")
            out: dict[str, QuantumCircuit] = {}
            for name in circuit_names(graph):
                for qc in _compile_named(graph, module, name, **kw):
                    out[batch_key(name, qc.metadata.get("batch_index") or [])] = qc
            return out
        circuits = _compile_named(graph, module, node, **kw)
        nd = graph.nodes.get(node)
        batch = nd.batch_shape if isinstance(nd, Unitary) else ()
        label = node
    elif node is not None:
        raise ConfigError(f"node={node!r} selects a node of a graph; got a {type(source).__name__}", field="node")
    elif isinstance(source, FrameModule):
        circuits = _frame_circuits(source, None, None, **kw)
        batch, label = source.batch, "frame"
    elif isinstance(source, QNNMap):
        circuits, batch, label = [_qnn_circuit(source, None, parameters=parameters)], (), "qnn"
    elif isinstance(source, QPAHyperNetwork):
        circuits, batch, label = [_qpa_circuit(source, None, None, parameters=parameters)], (), "qpa"
    else:
        raise ConfigError(f"cannot compile a {type(source).__name__}: expected a Graph, a GraphModule, a unitary "
                          "frame module, a QNNMap or a QPAHyperNetwork", field="source")
    if not batch:
        if index not in (None, 0, ()):
            raise GraphError(f"{label!r} is not batched; index must be omitted, got {index!r}", node=node)
        return circuits[0]
    if index is None:
        return circuits
    flat = _flat_index(index, tuple(batch), label, node)
    return circuits[flat]


def _flat_index(index: int | tuple[int, ...], batch: tuple[int, ...], label: str, node: str | None) -> int:
    total = math.prod(batch)
    if isinstance(index, int) and not isinstance(index, bool):
        if not 0 <= index < total:
            raise GraphError(f"{label!r} has {total} batch elements (batch shape {batch}); index {index} is out of "
                             "range", node=node)
        return index
    idx = tuple(index) if not isinstance(index, bool) else ()   # a bool index fits no batch shape
    if len(idx) != len(batch) or not all(isinstance(i, int) and 0 <= i < s for i, s in zip(idx, batch)):
        raise GraphError(f"{label!r} has batch shape {batch}; index {index!r} does not fit it", node=node)
    return int(np.ravel_multi_index(idx, batch))
