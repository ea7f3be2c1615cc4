"""Export an adapter's circuits as OpenQASM 3 files with a JSON index, and load them back.

``export_circuits(source, directory)`` writes one ``.qasm`` file per circuit of
:func:`tnpeft.quantum.to_qiskit` and ``index.json``::

    {"format": "tnpeft.circuits", "version": 1, "qasm_version": 3, "qiskit": "2.6.2",
     "circuits": [{"name": "U", "file": "U.qasm", "module": null, "node": "U", "kind": "unitary",
                   "method": "pauli", "rows": 16, "cols": 4, "qubits": 4, "batch_index": [],
                   "parameters": {}, "global_phase": 0.0, "gates": {"ry": 16, "cz": 6}, "depth": 7,
                   "sha256": "…", …}, …]}

``source`` is a built :class:`~tnpeft.Graph` (or its ``GraphModule``), a ``{module path: graph}``
mapping, a model with injected adapters, or the folder :func:`tnpeft.save_adapter` wrote; circuits
of an adapted model are named ``"<module path>:<node>"`` (files ``<module path>.<node>.qasm``).

Two details keep the files exact:

- Parameters are written under plain names (``theta_3``, ``x_0``; Qiskit would escape
  ``theta[3]`` to ``_theta_3_``); :func:`load_circuits` turns them back into the vectors
  ``theta`` and ``x``, so ``assign_parameters`` takes the same values in the same order.
- OpenQASM 3 as Qiskit writes it has no global phase, and a synthesized circuit has one
  (``e^{iα}``): the file then ends with ``p(2α) q[0]; rz(−2α) q[0];`` — exactly ``e^{iα}·I`` —
  so the reloaded operator equals the original one, phase included.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnpeft.errors import AdapterFileError, ConfigError, TNPeftError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, read_json
from tnpeft.quantum.compile import batch_key, circuit_names, to_qiskit
from tnpeft.quantum.synthesis import MAX_SYNTHESIS_QUBITS
from tnpeft.storage import graph_modules

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit

INDEX_NAME = "index.json"
FORMAT = "tnpeft.circuits"
VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LEADING = ("kind", "node", "method", "param", "rows", "cols", "batch_index")


def qasm3_text(circuit: QuantumCircuit) -> tuple[str, dict[str, int], float]:
    """The OpenQASM 3 text of ``circuit`` as :func:`export_circuits` writes it, with the parameter
    vectors it renamed (``{vector name: length}``) and the global phase it folded into gates."""
    from qiskit import qasm3
    from qiskit.circuit import Parameter, ParameterVectorElement

    qc = circuit.copy()
    vectors: dict[str, int] = {}
    rename = {}
    for p in qc.parameters:
        if not isinstance(p, ParameterVectorElement):
            raise ConfigError(f"circuit {circuit.name!r}: parameter {p.name!r} is not an element of a "
                              "ParameterVector; bind it before exporting", field="parameters")
        vectors[p.vector.name] = len(p.vector)
        rename[p] = Parameter(f"{p.vector.name}_{p.index}")
    if rename:
        qc.assign_parameters(rename, inplace=True)
    phase = float(qc.global_phase) if not hasattr(qc.global_phase, "parameters") else 0.0
    phase = math.remainder(phase, 2 * math.pi)
    if abs(phase) > 1e-12:
        qc.global_phase = 0.0
        qc.p(2 * phase, 0)       # P(2α)·RZ(−2α) = diag(e^{iα}, e^{iα})
        qc.rz(-2 * phase, 0)
    else:
        phase = 0.0
    return qasm3.dumps(qc), vectors, phase


def _file_stem(module: str, key: str) -> str:
    key = key.replace("[", "_").replace("]", "").replace(",", "_")
    return _SAFE.sub("_", f"{module}.{key}" if module else key)


def export_circuits(source: Any, directory: str | os.PathLike[str], *, adapter_name: str = "default",
                    parameters: bool = False, max_synthesis_qubits: int = MAX_SYNTHESIS_QUBITS) -> dict[str, Any]:
    """Write every circuit of ``source`` to ``directory`` as OpenQASM 3, plus ``index.json``.

    Args:
        source: a Graph or GraphModule, a ``{module path: graph}`` mapping, a model with injected
            adapters (adapter ``adapter_name``), or a saved adapter folder.
        directory: created if needed; files of the same names are replaced atomically.
        parameters: write trainable angles as ``input float[64] theta_k`` (values kept in the
            index as ``theta``) instead of numbers.
        max_synthesis_qubits: the largest register a frame is synthesized on (see
            :func:`tnpeft.quantum.to_qiskit`).

    Returns:
        the index (also written to ``directory/index.json``). A node that cannot be compiled (e.g.
        a Cayley frame too large to synthesize) does not stop the export: it is listed under
        ``"skipped"`` with its name (``"<module path>:<node>"``) and the reason, and every other
        circuit is written.

    Raises:
        ConfigError: the source has no unitary node, ``qnn`` node or hyper-network.
    """
    import qiskit

    modules = graph_modules(source, adapter_name)
    d = Path(directory)
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    stems: set[str] = set()
    found = 0
    for path, module in modules.items():
        circuits: dict[str, QuantumCircuit] = {}
        for name in circuit_names(module):
            found += 1
            try:
                got = to_qiskit(module, name, parameters=parameters, max_synthesis_qubits=max_synthesis_qubits)
            except TNPeftError as e:
                skipped.append({"name": f"{path}:{name}" if path else name, "reason": str(e)})
                continue
            for qc in got if isinstance(got, list) else [got]:
                circuits[batch_key(name, qc.metadata.get("batch_index") or [])] = qc
        for key, qc in circuits.items():
            text, vectors, phase = qasm3_text(qc)
            stem = _file_stem(path, key)
            base, i = stem, 1
            while stem.lower() in stems:   # case-insensitive file systems
                i += 1
                stem = f"{base}_{i}"
            stems.add(stem.lower())
            data = text.encode()
            atomic_write_bytes(d / f"{stem}.qasm", data)
            meta = dict(qc.metadata or {})
            theta = meta.pop("theta", None)
            meta.pop("qubits", None)
            first = {k: meta.pop(k) for k in _LEADING if k in meta}
            entry = {"name": f"{path}:{key}" if path else key, "file": f"{stem}.qasm", "module": path or None,
                     **first, "qubits": qc.num_qubits, **meta, "parameters": vectors, "global_phase": phase,
                     "gates": {str(k): int(v) for k, v in qc.count_ops().items()}, "depth": qc.depth(),
                     "sha256": hashlib.sha256(data).hexdigest()}
            if theta is not None:
                entry["theta"] = theta
            entries.append(entry)
    if not found:
        names = ", ".join(sorted({repr(m.graph.name or "graph") for m in modules.values()}))
        raise ConfigError(f"{names} has no unitary node, 'qnn' node or hyper-network: there is no circuit to export",
                          field="source")
    index = {"format": FORMAT, "version": VERSION, "qasm_version": 3, "qiskit": qiskit.__version__,
             "circuits": entries, "skipped": skipped}
    atomic_write_json(d / INDEX_NAME, index)
    return index


def read_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``directory/index.json``."""
    where = str(Path(directory) / INDEX_NAME)
    index = read_json(Path(directory) / INDEX_NAME, "circuit index")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise AdapterFileError(f"{where!r} is not a tnpeft circuit index: field 'format' must be {FORMAT!r}")
    if type(index.get("version")) is not int or index.get("version") != VERSION:
        raise AdapterFileError(f"{where!r}: version {index.get('version')!r} is not supported (expected {VERSION})")
    entries = index.get("circuits")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                and isinstance(e.get("file"), str) for e in entries):
        raise AdapterFileError(f"{where!r}: field 'circuits' must be a list of objects with 'name' and 'file'")
    return index


def load_circuits(directory: str | os.PathLike[str]) -> dict[str, QuantumCircuit]:
    """Read the circuits :func:`export_circuits` wrote, by name, with ``qiskit.qasm3.loads``
    (which needs the package ``qiskit_qasm3_import``). Each file's checksum is verified; parameters
    come back as the vectors ``theta``/``x``; ``metadata`` is the circuit's index entry."""
    try:
        import qiskit_qasm3_import  # noqa: F401
    except ImportError:
        raise ConfigError("reading OpenQASM 3 needs the package qiskit_qasm3_import "
                          "(pip install qiskit_qasm3_import, or tnpeft's 'quantum' extra)", field="qiskit_qasm3_import") from None
    from qiskit import qasm3
    from qiskit.circuit import ParameterVector

    d = Path(directory)
    index = read_index(d)
    out: dict[str, QuantumCircuit] = {}
    for e in index["circuits"]:
        f = d / e["file"]
        if Path(e["file"]).name != e["file"]:
            raise AdapterFileError(f"{str(d / INDEX_NAME)!r}: circuit {e['name']!r} names file {e['file']!r} outside "
                                   "the folder")
        try:
            data = f.read_bytes()
        except OSError as err:
            raise AdapterFileError(f"circuit file {str(f)!r} cannot be read: {err}") from None
        if e.get("sha256") and hashlib.sha256(data).hexdigest() != e["sha256"]:
            raise AdapterFileError(f"circuit file {str(f)!r} does not match the checksum in the index "
                                   "(changed after export)")
        try:
            qc = qasm3.loads(data.decode())
        except Exception as err:  # the importer raises its own parse errors
            raise AdapterFileError(f"circuit file {str(f)!r} is not valid OpenQASM 3: {err}") from None
        vectors = {name: ParameterVector(name, int(n)) for name, n in (e.get("parameters") or {}).items()}
        mapping = {}
        for p in qc.parameters:
            name, _, k = p.name.rpartition("_")
            if name not in vectors or not k.isdigit() or int(k) >= len(vectors[name]):
                raise AdapterFileError(f"circuit file {str(f)!r}: input {p.name!r} is not listed in the index")
            mapping[p] = vectors[name][int(k)]
        if mapping:
            qc.assign_parameters(mapping, inplace=True)
        qc.name = e["name"]
        qc.metadata = dict(e)
        out[e["name"]] = qc
    return out
