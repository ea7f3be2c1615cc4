"""peft's additive tensor-network tuners, to and from their checkpoints: LoHa, LoKr, VeRA,
FourierFT and AdaLoRA (see :mod:`tnpeft.adapters.peft_formats`)."""

from __future__ import annotations

from typing import Any

import torch

from tnpeft.adapters.adalora import adalora
from tnpeft.adapters.cross_layer import vera
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
    number,
    pattern_value,
    per_module,
    refuse,
    register_format,
    tensors_of,
)
from tnpeft.adapters.peft_tuners import fourierft, loha, lokr
from tnpeft.adapters.site import layer_sites
from tnpeft.errors import AdapterFileError, ConfigError
from tnpeft.runtime import GraphModule

_DROPS = ("rank_dropout", "module_dropout")


def _no_dropout(cfg: dict[str, Any], src: str, names: tuple[str, ...]) -> None:
    for name in names:
        refuse(cfg, src, name, (0, 0.0, None), "tnpeft builds this tuner without dropout")


def _rank_alpha(cfg: dict[str, Any], path: str, r_file: int, src: str, alpha_key: str = "alpha") -> tuple[int, float]:
    r = pattern_value(cfg.get("rank_pattern"), path, integer(cfg, src, "r", r_file))
    if r != r_file:
        raise AdapterFileError(f"{src}: module {path!r} has rank {r_file} in its weights but {r} in its config "
                               "(field 'r' / 'rank_pattern')")
    return r, pattern_value(cfg.get("alpha_pattern"), path, number(cfg, src, alpha_key, 8.0))


# ------------------------------------------------------------------ LoHa
def _loha_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
               src: str) -> PeftImport:
    _no_dropout(cfg, src, _DROPS)
    out = PeftImport("loha")
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        r = expect(t.get("hada_w1_b"), (t["hada_w1_b"].shape[0] if "hada_w1_b" in t else 0, n), src, path,
                   "hada_w1_b").shape[0]
        r, alpha = _rank_alpha(cfg, path, r, src)
        out.graphs[path] = build(src, path, loha, n, m, r=r, alpha=alpha)
        out.values[path] = {"B1.weight": expect(t.get("hada_w1_a"), (m, r), src, path, "hada_w1_a"),
                            "A1.weight": t["hada_w1_b"],
                            "B2.weight": expect(t.get("hada_w2_a"), (m, r), src, path, "hada_w2_a"),
                            "A2.weight": expect(t.get("hada_w2_b"), (r, n), src, path, "hada_w2_b")}
    return out


def _loha_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
               shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    check_layers("LoHa", layers, False)
    ranks = {p: m.graph.nodes["A1"].sizes[0] for p, m in modules.items()}
    alphas = {p: m.graph.scale * ranks[p] for p, m in modules.items()}
    r, rank_pattern = per_module(ranks)
    alpha, alpha_pattern = per_module(alphas)
    names = {"B1.weight": "hada_w1_a", "A1.weight": "hada_w1_b", "B2.weight": "hada_w2_a", "A2.weight": "hada_w2_b"}
    tensors = {f"{PREFIX}{p}.{names[k]}": v for p, m in modules.items() for k, v in tensors_of(m).items()}
    return common_config("LOHA", layers, r=r, alpha=alpha, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                         rank_dropout=0.0, module_dropout=0.0, use_effective_conv2d=False, init_weights=True), tensors


register_format(PeftFormat("LOHA", "loha", ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), _loha_load,
                           _loha_save))

# ------------------------------------------------------------------ LoKr
_LOKR = {"lokr_w1": "W1.weight", "lokr_w1_a": "Wa1.weight", "lokr_w1_b": "Wb1.weight", "lokr_w2": "W2.weight",
         "lokr_w2_a": "Wa2.weight", "lokr_w2_b": "Wb2.weight"}


def _lokr_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
               src: str) -> PeftImport:
    _no_dropout(cfg, src, _DROPS)
    out = PeftImport("lokr")
    both, factor = bool(cfg.get("decompose_both", False)), integer(cfg, src, "decompose_factor", -1)
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        r, alpha = _rank_alpha(cfg, path, integer(cfg, src, "r", 8), src)
        g = build(src, path, lokr, n, m, r=r, alpha=alpha, decompose_both=both, decompose_factor=factor)
        want = {k: g.nodes[v.split(".")[0]].sizes for k, v in _LOKR.items() if v.split(".")[0] in g.nodes}
        if set(t) != set(want):
            raise AdapterFileError(f"{src}: module {path!r} holds {sorted(t)}; for rank {r} (decompose_both={both}, "
                                   f"decompose_factor={factor}) peft's LoKr holds {sorted(want)}")
        out.graphs[path] = g
        out.values[path] = {_LOKR[k]: expect(t[k], want[k], src, path, k) for k in want}
    return out


def _lokr_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
               shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    check_layers("LoKr", layers, False)
    hp = {p: m.graph.meta.get("hparams", {}) for p, m in modules.items()}
    ranks = {p: h.get("r", 8) for p, h in hp.items()}
    alphas = {p: modules[p].graph.scale * ranks[p] for p in modules}
    both = {h.get("decompose_both", False) for h in hp.values()}
    factor = {h.get("decompose_factor", -1) for h in hp.values()}
    if len(both) > 1 or len(factor) > 1:
        raise ConfigError("peft's LoKr has one decompose_both and one decompose_factor per checkpoint; the modules "
                          "disagree", field="decompose_both")
    r, rank_pattern = per_module(ranks)
    alpha, alpha_pattern = per_module(alphas)
    back = {v: k for k, v in _LOKR.items()}
    tensors = {f"{PREFIX}{p}.{back[k]}": v for p, m in modules.items() for k, v in tensors_of(m).items()}
    return common_config("LOKR", layers, r=r, alpha=alpha, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                         decompose_both=both.pop(), decompose_factor=factor.pop(), rank_dropout=0.0,
                         module_dropout=0.0, rank_dropout_scale=False, use_effective_conv2d=False,
                         init_weights=True), tensors


register_format(PeftFormat("LOKR", "lokr", tuple(_LOKR), _lokr_load, _lokr_save))


# ------------------------------------------------------------------ VeRA
def vera_projections(r: int, in_max: int, out_max: int, key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VeRA's shared ``A`` (``r × in_max``) and ``B`` (``out_max × r``) as peft draws them from
    ``projection_prng_key``: one CPU generator, ``A`` then ``B``, each ``U(±√(6/fan_in))`` in float32."""
    g = torch.Generator(device="cpu").manual_seed(key)
    a = torch.empty(r, in_max).uniform_(-(6.0 / in_max) ** 0.5, (6.0 / in_max) ** 0.5, generator=g)
    b = torch.empty(out_max, r).uniform_(-(6.0 / r) ** 0.5, (6.0 / r) ** 0.5, generator=g)
    return a, b


def _vera_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
               src: str) -> PeftImport:
    refuse(cfg, src, "vera_dropout", (0, 0.0, None), "tnpeft builds VeRA without dropout")
    refuse(cfg, src, "bias", ("none", None), "tnpeft imports VeRA without trained biases")
    r = integer(cfg, src, "r", 256)
    sites = layer_sites({p: (x.in_features, x.out_features) for p, x in layers.items()})
    site = next(iter(sites.values()))
    a, b = extra.get("base_model.vera_A"), extra.get("base_model.vera_B")
    if a is None and b is None:          # save_projection=False: drawn again from the key
        a, b = vera_projections(r, site.in_max, site.out_max, integer(cfg, src, "projection_prng_key", 0))
    out = PeftImport("vera", shared={"vera_A.weight": expect(a, (r, site.in_max), src, "base_model", "vera_A"),
                                     "vera_B.weight": expect(b, (site.out_max, r), src, "base_model", "vera_B")})
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        out.graphs[path] = build(src, path, vera, n, m, r=r, site=sites[path])
        out.values[path] = {"d.weight": expect(t.get("vera_lambda_d"), (r,), src, path, "vera_lambda_d"),
                            "b.weight": expect(t.get("vera_lambda_b"), (m,), src, path, "vera_lambda_b")}
    return out


def _vera_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
               shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    r = most_common([m.graph.nodes["d"].sizes[0] for m in modules.values()])
    tensors = {"base_model.vera_A": shared["vera_A.weight"], "base_model.vera_B": shared["vera_B.weight"]}
    for p, m in modules.items():
        v = tensors_of(m)
        tensors[f"{PREFIX}{p}.vera_lambda_d"] = v["d.weight"]
        tensors[f"{PREFIX}{p}.vera_lambda_b"] = v["b.weight"]
    return common_config("VERA", layers, fan_in_fan_out=fan_in_fan_out(layers), r=r, projection_prng_key=0, save_projection=True, vera_dropout=0.0,
                         d_initial=0.1, bias="none", init_weights=True), tensors


register_format(PeftFormat("VERA", "vera", ("vera_lambda_b", "vera_lambda_d"), _vera_load, _vera_save, conv1d=True))


# ------------------------------------------------------------------ FourierFT
def _fourierft_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
                    src: str) -> PeftImport:
    refuse(cfg, src, "bias", ("none", None), "tnpeft imports FourierFT without trained biases")
    out = PeftImport("fourierft")
    k0 = integer(cfg, src, "n_frequency", 1000)
    scaling, seed = number(cfg, src, "scaling", 150.0), integer(cfg, src, "random_loc_seed", 777)
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        k = pattern_value(cfg.get("n_frequency_pattern"), path, k0)
        out.graphs[path] = build(src, path, fourierft, n, m, n_frequency=k, scaling=scaling, random_loc_seed=seed)
        out.values[path] = {"c.weight": expect(t.get("fourierft_spectrum"), (k,), src, path, "fourierft_spectrum")}
    return out


def _fourierft_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
                    shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    hp = {p: m.graph.meta.get("hparams", {}) for p, m in modules.items()}
    ks = {p: m.graph.nodes["c"].sizes[0] for p, m in modules.items()}
    for key in ("scaling", "random_loc_seed"):
        if len({h.get(key) for h in hp.values()}) > 1:
            raise ConfigError(f"peft's FourierFT has one {key} per checkpoint; the modules disagree", field=key)
    h = next(iter(hp.values()))
    k, pattern = per_module(ks)
    tensors = {f"{PREFIX}{p}.fourierft_spectrum": tensors_of(m)["c.weight"] for p, m in modules.items()}
    return common_config("FOURIERFT", layers, fan_in_fan_out=fan_in_fan_out(layers), n_frequency=k, n_frequency_pattern=pattern,
                         scaling=h.get("scaling", 150.0), random_loc_seed=h.get("random_loc_seed", 777),
                         bias="none", init_weights=False), tensors


register_format(PeftFormat("FOURIERFT", "fourierft", ("fourierft_spectrum",), _fourierft_load, _fourierft_save,
                           conv1d=True))


# ------------------------------------------------------------------ AdaLoRA
def _adalora_load(cfg: dict[str, Any], layers: dict[str, PeftLayer], tensors: dict[str, Tensors], extra: Tensors,
                  src: str) -> PeftImport:
    refuse(cfg, src, "bias", ("none", None), "tnpeft imports AdaLoRA without trained biases")
    init_r = integer(cfg, src, "init_r", 12)
    alpha = number(cfg, src, "lora_alpha", 8)
    out = PeftImport("adalora")
    for path, t in tensors.items():
        n, m = layers[path].in_features, layers[path].out_features
        r = expect(t.get("lora_A"), (t["lora_A"].shape[0] if "lora_A" in t else 0, n), src, path, "lora_A").shape[0]
        mask = pattern_value({k.removesuffix(".lora_E"): v for k, v in (cfg.get("rank_pattern") or {}).items()},
                             path, None)
        if r != (sum(bool(b) for b in mask) if isinstance(mask, list) else init_r):
            raise AdapterFileError(f"{src}: module {path!r} keeps {r} triplets in its weights but its config (init_r, "
                                   f"rank_pattern) says {sum(map(bool, mask)) if isinstance(mask, list) else init_r}")
        if r == 0:          # pruned away: its update is zero, so the layer gets no adapter
            continue
        g = build(src, path, adalora, n, m, r=r, target_r=min(r, integer(cfg, src, "target_r", 8)), alpha=alpha)
        # peft scales by alpha / (ranknum + 1e-5) with ranknum = init_r even after pruning (alpha 0: the rank)
        out.graphs[path] = g.replace(scale=(alpha if alpha > 0 else r) / (init_r + 1e-5))
        out.values[path] = {"Q.weight": t["lora_A"], "P.weight": expect(t.get("lora_B"), (m, r), src, path, "lora_B"),
                            "E.weight": expect(t.get("lora_E"), (r, 1), src, path, "lora_E")[:, 0]}
    if not out.graphs:
        raise AdapterFileError(f"{src}: every module was pruned to rank 0 (field 'rank_pattern'): nothing to import")
    return out


def _adalora_save(modules: dict[str, GraphModule], layers: dict[str, PeftLayer],
                  shared: Tensors) -> tuple[dict[str, Any], Tensors]:
    ranks = {p: m.graph.nodes["Q"].sizes[0] for p, m in modules.items()}
    r = max(ranks.values())          # init_r; smaller modules (a pruned import) keep their first rows
    pattern = {f"{p}.lora_E": [True] * k + [False] * (r - k) for p, k in ranks.items() if k < r}
    scales = {m.graph.scale for m in modules.values()}
    if len(scales) > 1:
        raise ConfigError("peft's AdaLoRA has one lora_alpha per checkpoint; the modules' scales differ", field="alpha")
    hp = next(iter(modules.values())).graph.meta.get("hparams", {})
    tensors: Tensors = {}
    for p, m in modules.items():
        v = tensors_of(m)
        tensors.update({f"{PREFIX}{p}.lora_A": v["Q.weight"], f"{PREFIX}{p}.lora_B": v["P.weight"],
                        f"{PREFIX}{p}.lora_E": v["E.weight"][:, None]})
    tinit, tfinal = hp.get("tinit", 0), hp.get("tfinal", 0)
    return common_config("ADALORA", layers, fan_in_fan_out=fan_in_fan_out(layers), r=r, init_r=r, target_r=min(hp.get("target_r", r), r),
                         lora_alpha=scales.pop() * (r + 1e-5), lora_dropout=0.0, tinit=tinit, tfinal=tfinal,
                         deltaT=hp.get("delta_t", 1), total_step=hp.get("total_step") or tinit + tfinal + 1,
                         beta1=hp.get("beta1", 0.85), beta2=hp.get("beta2", 0.85), rank_pattern=pattern or None,
                         orth_reg_weight=hp.get("orth_reg_weight", 0.5), bias="none", init_lora_weights=True), tensors


register_format(PeftFormat("ADALORA", "adalora", ("lora_A", "lora_B", "lora_E"), _adalora_load, _adalora_save,
                           conv1d=True))
