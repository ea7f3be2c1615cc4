"""peft's multiplicative tensor-network tuners, to and from their checkpoints: IA³, OFT, BOFT and
HRA (see :mod:`tnpeft.adapters.peft_formats`)."""

from __future__ import annotations

from typing import Any, cast

import torch

from tnpeft.adapters.oft import oft
from tnpeft.adapters.peft_formats import (
    PREFIX,
    PeftFormat,
    PeftImport,
    PeftLayer,
    Tensors,
    build,
    check_layers,
    common_config,
    expect,
    fan_in_fan_out,
    integer,
    most_common,
    refuse,
    register_format,
    tensors_of,
)
from tnpeft.adapters.peft_tuners import boft, hra, ia3, is_feedforward
from tnpeft.errors import AdapterFileError, ConfigError
from tnpeft.graph import Unitary
from tnpeft.runtime import GraphModule

#: the peft version written into exported configs (OFT warns about Cayley–Neumann files of older ones)
PEFT_VERSION = "0.18.0"


# ------------------------------------------------------------------ IA³
def _ia3_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
              src: str) -> PeftImport:
    ff_rule = cfg.get("feedforward_modules") or []
    if not isinstance(ff_rule, (str, list)):
        raise AdapterFileError(f"{src}: field 'feedforward_modules' is {ff_rule!r}; expected a regular expression or "
                               "a list of names")
    out = PeftImport("ia3")
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        ff = is_feedforward(ff_rule, path)
        out.graphs[path] = build(src, path, ia3, n, m, feedforward=ff)
        out.values[path] = {"l.weight": expect(t.get("ia3_l"), (1, n) if ff else (m, 1), src, path, "ia3_l").reshape(-1)}
    return out


def _ia3_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
              shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    ff = sorted(p for p, m in modules.items() if m.graph.mode == "input")
    tensors = {}
    for p, m in modules.items():
        v = tensors_of(m)["l.weight"]
        tensors[f"{PREFIX}{p}.ia3_l"] = v.reshape(1, -1) if p in ff else v.reshape(-1, 1)
    return common_config("IA3", layers, fan_in_fan_out=fan_in_fan_out(layers), feedforward_modules=ff, init_ia3_weights=True), tensors


register_format(PeftFormat("IA3", "ia3", ("ia3_l",), _ia3_load, _ia3_save, conv1d=True))


# ------------------------------------------------------------------ OFT
def _oft_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
              src: str) -> PeftImport:
    refuse(cfg, src, "coft", (False, None), "constrained OFT projects its parameters in place at every step; "
           "tnpeft does not import it")
    refuse(cfg, src, "block_share", (False, None), "tnpeft imports OFT with one rotation per block")
    refuse(cfg, src, "bias", ("none", None), "tnpeft imports OFT without trained biases")
    neumann = cfg.get("use_cayley_neumann", True)
    terms = integer(cfg, src, "num_cayley_neumann_terms", 5)
    r, size = integer(cfg, src, "r", 0), integer(cfg, src, "oft_block_size", 32)
    out = PeftImport("oft")
    for path, t in tensors.items():
        n = layers[path].in_features
        k = size if size > 0 else (n // r if r > 0 and n % r == 0 else 0)
        if k <= 1 or n % k:
            raise AdapterFileError(f"{src}: module {path!r}: fields 'r'={r} and 'oft_block_size'={size} give no block "
                                   f"size dividing in_features {n}")
        out.graphs[path] = build(src, path, oft, n, layers[path].out_features, block_size=k,
                                 param="cayley_neumann" if neumann else "cayley_packed", terms=terms)
        out.values[path] = {"R1.weight": expect(t.get("oft_R.weight"), (n // k, k * (k - 1) // 2), src, path,
                                                "oft_R.weight")}
    return out


def _packed_from_cayley(g: torch.Tensor) -> torch.Tensor:
    # tnpeft's cayley: A = G − Gᵀ, U = (I − A)(I + A)⁻¹; peft's exact branch gives the same U from the
    # packed triangle T with A = Tᵀ − T, i.e. T[i<j] = −A[i, j]
    a = g - g.transpose(-1, -2)
    rows, cols = torch.triu_indices(a.shape[-1], a.shape[-1], 1)
    return -a[..., rows, cols]


def _oft_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
              shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    check_layers("OFT", layers, False)
    params, sizes, terms, tensors = set(), set(), set(), {}
    for p, m in modules.items():
        node = m.graph.nodes.get("R1")
        if set(m.graph.nodes) != {"R1"} or not isinstance(node, Unitary) or node.param not in ("cayley", "cayley_packed", "cayley_neumann") or \
                node.options.get("intrinsic_rank") not in (None, node.sizes[-1]):
            raise ConfigError(f"module {p!r}: peft's OFT is one block rotation (no butterfly) of param cayley, "
                              f"cayley_packed or cayley_neumann; this adapter has {sorted(m.graph.nodes)}", field="param")
        params.add("neumann" if node.param == "cayley_neumann" else "exact")
        sizes.add(node.sizes[-1])
        terms.add(node.options.get("terms", 5))
        v = tensors_of(m)
        tensors[f"{PREFIX}{p}.oft_R.weight"] = v["R1.weight"] if "R1.weight" in v else \
            _packed_from_cayley(v["R1.skew_factor"].to(torch.float64)).to(v["R1.skew_factor"].dtype)
    for what, s in (("param", params), ("block_size", sizes), ("terms", terms)):
        if len(s) > 1:
            raise ConfigError(f"peft's OFT has one {what} per checkpoint; the modules have {sorted(s)}", field=what)
    return common_config("OFT", layers, fan_in_fan_out=fan_in_fan_out(layers), r=0, oft_block_size=sizes.pop(), module_dropout=0.0, coft=False, eps=6e-5,
                         block_share=False, use_cayley_neumann=params.pop() == "neumann",
                         num_cayley_neumann_terms=terms.pop(), init_weights=True, bias="none",
                         peft_version=PEFT_VERSION), tensors


register_format(PeftFormat("OFT", "oft", ("oft_R.weight",), _oft_load, _oft_save))


# ------------------------------------------------------------------ BOFT
def _boft_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
               src: str) -> PeftImport:
    refuse(cfg, src, "boft_n_butterfly_factor", (1,), "tnpeft builds BOFT with one butterfly factor (peft itself "
           "uses 1 without its CUDA kernel)")
    refuse(cfg, src, "boft_dropout", (0, 0.0, None), "tnpeft builds BOFT without its multiplicative dropout")
    refuse(cfg, src, "bias", ("none", None), "tnpeft imports BOFT without trained biases")
    size, num = integer(cfg, src, "boft_block_size", 4), integer(cfg, src, "boft_block_num", 0)
    out = PeftImport("boft")
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        g = build(src, path, boft, n, m, block_size=size, block_num=num)
        d, h = g.nodes["R"].sizes[:2]
        rot = expect(t.get("boft_R"), (1, d, h, h), src, path, "boft_R")
        out.graphs[path] = g
        out.values[path] = {"R.skew_factor": rot[0] / 2, "s.weight": expect(t.get("boft_s"), (m, 1), src, path,
                                                                           "boft_s")[:, 0]}
    return out


def _boft_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
               shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    check_layers("BOFT", layers, False)
    tensors = {}
    for p, m in modules.items():
        v = tensors_of(m)
        tensors[f"{PREFIX}{p}.boft_R"] = (v["R.skew_factor"] * 2)[None]
        tensors[f"{PREFIX}{p}.boft_s"] = v["s.weight"][:, None]
    size = most_common([m.graph.nodes["R"].sizes[-1] for m in modules.values()])
    return common_config("BOFT", layers, fan_in_fan_out=fan_in_fan_out(layers), boft_block_size=size, boft_block_num=0, boft_n_butterfly_factor=1,
                         boft_dropout=0.0, init_weights=True, bias="none"), tensors


register_format(PeftFormat("BOFT", "boft", ("boft_R", "boft_s"), _boft_load, _boft_save))


# ------------------------------------------------------------------ HRA
def _hra_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
              src: str) -> PeftImport:
    refuse(cfg, src, "apply_GS", (False, None), "the Gram–Schmidt variant is another map; tnpeft imports the "
           "product of reflections")
    refuse(cfg, src, "bias", ("none", None), "tnpeft imports HRA without trained biases")
    r = integer(cfg, src, "r", 8)
    out = PeftImport("hra")
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        out.graphs[path] = build(src, path, hra, n, m, r=r)
        out.values[path] = {"H.vectors": expect(t.get("hra_u"), (n, r), src, path, "hra_u").T.contiguous()}
    return out


def _hra_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
              shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    check_layers("HRA", layers, False)
    ranks = {cast(Unitary, m.graph.nodes["H"]).options.get("intrinsic_rank") for m in modules.values()}
    if len(ranks) > 1:
        raise ConfigError(f"peft's HRA has one r per checkpoint; the modules have {sorted(ranks, key=str)}", field="r")
    tensors = {f"{PREFIX}{p}.hra_u": tensors_of(m)["H.vectors"].T.contiguous() for p, m in modules.items()}
    return common_config("HRA", layers, r=ranks.pop(), apply_GS=False, init_weights=True, bias="none"), tensors


register_format(PeftFormat("HRA", "hra", ("hra_u",), _hra_load, _hra_save))
