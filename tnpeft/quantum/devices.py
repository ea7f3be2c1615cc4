r"""Quantum devices by name: calibrated fake IBM devices, a generic one, an ideal one, or your own.

:func:`resolve_backend` turns what a user writes into a Qiskit ``BackendV2``:

- ``"ideal"`` (or ``None``) — a noiseless ``qiskit_aer.AerSimulator``: exact probabilities, no
  coupling map;
- ``"generic"`` — ``GenericBackendV2`` on a heavy-hex coupling map (CX, RZ, SX, X) with the random
  but plausible error rates Qiskit gives it;
- a fake IBM device, ``"fake_torino"``, ``"fake_sherbrooke"``, ``"fake_brisbane"``, … — a snapshot of
  a real device's calibration (qubits, coupling map, basis gates, gate and readout errors, T1/T2,
  durations) shipped by ``qiskit-ibm-runtime`` (``pip install tnpeft[quantum]``), simulated with
  its noise by ``qiskit-aer``; it is imported only when such a name is asked for, and works
  offline;
- any ``BackendV2`` object: passed through (a real device included — see :mod:`tnpeft.quantum.device`).

:func:`list_devices` describes every available device (:class:`DeviceInfo`: qubits, basis gates,
median two-qubit and readout error, dead couplers) for ``tnpeft devices``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tnpeft.errors import ConfigError
from tnpeft.quantum.resources import default_backend

if TYPE_CHECKING:  # pragma: no cover
    from qiskit.providers import BackendV2

TWO_QUBIT_GATES = ("cz", "ecr", "cx")
#: when the device says nothing: IBM's default repetition delay between shots (seconds)
DEFAULT_REP_DELAY = 250e-6
_RUNTIME_HINT = "pip install 'tnpeft[quantum]' (or pip install qiskit-ibm-runtime)"


def _fake_module() -> Any:
    try:
        import qiskit_ibm_runtime.fake_provider as fp
    except ImportError:
        raise ConfigError(f"the calibrated fake IBM devices come with qiskit-ibm-runtime: {_RUNTIME_HINT}",
                          field="backend") from None
    return fp


def fake_device_classes() -> dict[str, type]:
    """``{name: class}`` of every fake device ``qiskit-ibm-runtime`` ships (``fake_torino`` → ``FakeTorino``)."""
    import warnings

    fp = _fake_module()
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for attr in dir(fp):
            cls = getattr(fp, attr)
            if isinstance(cls, type) and issubclass(cls, FakeBackendV2) and cls is not FakeBackendV2:
                name = getattr(cls, "backend_name", None)
                if isinstance(name, str):
                    out[name] = cls
    return dict(sorted(out.items()))


def is_ideal(backend: Any) -> bool:
    """Whether ``backend`` is a noiseless simulator (an ``AerSimulator`` without a noise model)."""
    try:
        from qiskit_aer import AerSimulator
    except ImportError:
        return False
    return isinstance(backend, AerSimulator) and backend.options.noise_model is None


def resolve_backend(spec: Any = "ideal") -> BackendV2:
    """The ``BackendV2`` that ``spec`` names (module docstring); a :class:`ConfigError` listing the
    names otherwise."""
    from qiskit.providers import BackendV2

    if spec is None or spec == "ideal":
        try:
            from qiskit_aer import AerSimulator
        except ImportError:
            raise ConfigError("the ideal device is qiskit-aer's simulator: pip install qiskit-aer (or tnpeft's "
                              "'quantum' extra)", field="backend") from None
        return AerSimulator(method="statevector")
    if isinstance(spec, BackendV2):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"backend must be a name ('ideal', 'generic', 'fake_torino', …) or a Qiskit BackendV2, got "
                          f"a {type(spec).__name__}", field="backend")
    if spec == "generic":
        return default_backend(20)
    if spec.startswith("fake_"):
        classes = fake_device_classes()
        if spec not in classes:
            close = [n for n in classes if spec[5:9] in n][:5]
            raise ConfigError(f"no fake device named {spec!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                              + f"; there are {len(classes)}: {', '.join(classes)} (tnpeft devices lists them)",
                              field="backend")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return classes[spec]()
    raise ConfigError(f"unknown backend {spec!r}: expected 'ideal', 'generic', a fake IBM device such as 'fake_torino' "
                      "(tnpeft devices lists them) or a Qiskit BackendV2 object", field="backend")


def backend_label(backend: Any) -> str:
    """A short name: ``"ideal"`` for a noiseless simulator, else the backend's ``name``."""
    return "ideal" if is_ideal(backend) else str(getattr(backend, "name", type(backend).__name__))


def two_qubit_gate(backend: Any) -> str | None:
    """The device's native two-qubit gate (``cz``, ``ecr`` or ``cx``), or ``None``."""
    names = set(backend.target.operation_names)
    return next((g for g in TWO_QUBIT_GATES if g in names), None)


def rep_delay(backend: Any) -> float:
    """The delay between shots (seconds): the device's ``default_rep_delay`` when it states one,
    else :data:`DEFAULT_REP_DELAY`."""
    try:
        value = backend.configuration().default_rep_delay
    except Exception:   # BackendV2 without a configuration (GenericBackendV2, simulators)
        value = None
    return float(value) if value else DEFAULT_REP_DELAY


@dataclass
class DeviceInfo:
    """One device: qubits, basis gates, its two-qubit gate, median errors, dead couplers
    (error 1.0) and whether it is usable (median two-qubit error below 1)."""

    name: str
    qubits: int
    basis_gates: list[str]
    two_qubit_gate: str | None
    median_two_qubit_error: float | None
    median_readout_error: float | None
    dead_couplers: int = 0
    couplers: int = 0
    rep_delay: float = DEFAULT_REP_DELAY
    usable: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_info(backend: Any) -> DeviceInfo:
    """Describe a ``BackendV2`` (or a name :func:`resolve_backend` knows)."""
    b = resolve_backend(backend)
    tg = b.target
    name = backend if isinstance(backend, str) else backend_label(b)
    basis = sorted(n for n in tg.operation_names if n not in ("delay", "reset", "measure", "barrier")
                   and not n.startswith(("save_", "set_", "for_", "if_", "while_", "switch_", "break_", "continue_")))
    two = None if is_ideal(b) else two_qubit_gate(b)
    errs: list[float] = []
    if two is not None and tg[two] is not None:
        errs = [p.error for p in tg[two].values() if p is not None and p.error is not None]
    ro: list[float] = []
    if "measure" in tg.operation_names and tg["measure"] is not None:
        ro = [p.error for p in tg["measure"].values() if p is not None and p.error is not None]
    med2 = statistics.median(errs) if errs else None
    dead = sum(e >= 1.0 for e in errs)
    usable, note = True, ""
    if is_ideal(b):
        note = "noiseless simulator (exact probabilities, any gate, no coupling map)"
    elif med2 is not None and med2 >= 1.0:
        usable, note = False, f"unusable: its calibration gives every {two} pair an error of 1.0"
    elif dead:
        note = f"{dead} of {len(errs)} {two} couplers have error 1.0 (the transpiler avoids them where it can)"
    if name == "fake_nighthawk":
        note = "its snapshot's values are placeholders, not typical of the device (qiskit-ibm-runtime says so)"
    return DeviceInfo(name, b.num_qubits if not is_ideal(b) else 0, basis, two, med2,
                      statistics.median(ro) if ro else None, dead, len(errs), rep_delay(b), usable, note)


_INFOS: dict[str, DeviceInfo] = {}   # the snapshots never change within a process


def list_devices(fake: bool = True) -> tuple[list[DeviceInfo], str | None]:
    """Every device :func:`resolve_backend` knows, described; and a note when the fake IBM devices
    are missing (``qiskit-ibm-runtime`` not installed). Building the 68 fake devices' targets takes
    tens of seconds once; the descriptions are kept for the process."""
    names = ["ideal", "generic"]
    note = None
    if fake:
        try:
            names += list(fake_device_classes())
        except ConfigError as e:
            note = str(e)
    for name in names:
        if name not in _INFOS:
            _INFOS[name] = device_info(name)
    return [_INFOS[n] for n in names], note
