"""peft's tensor-network tuners against peft itself: a peft model with random non-zero adapter
values and the tnpeft model imported from its checkpoint give equal logits and gradients; tnpeft's
native export loads in peft with equal logits; merges and trainable-parameter counts are equal. On
GPT-2's ``Conv1D`` the same against peft where peft takes it (VeRA, IA³, FourierFT, AdaLoRA), and
against tnpeft on a ``nn.Linear`` twin of the model where it does not (whose export is refused)."""

from __future__ import annotations

import copy
import json
import warnings

import peft
import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

import tnpeft
from tnpeft.adapters import PEFT_FORMATS, PeftLayer
from tnpeft.errors import AdapterFileError, ConfigError

T = ["q_proj", "v_proj", "down_proj"]
G = ["c_attn", "c_proj", "c_fc"]
CONFIGS = {  # random non-zero values: init_weights=False where peft has it, and values drawn below
    "loha": lambda t: peft.LoHaConfig(r=4, alpha=6, target_modules=t, init_weights=False),
    "lokr": lambda t: peft.LoKrConfig(r=2, alpha=3, target_modules=t, init_weights=False),
    "lokr_both": lambda t: peft.LoKrConfig(r=1, alpha=3, target_modules=t, decompose_both=True, init_weights=False),
    "vera": lambda t: peft.VeraConfig(r=8, target_modules=t, init_weights=False),
    "ia3": lambda t: peft.IA3Config(target_modules=t, feedforward_modules=[t[-1]], init_ia3_weights=False),
    "oft": lambda t: peft.OFTConfig(r=0, oft_block_size=8, target_modules=t, init_weights=False),
    "oft_exact": lambda t: peft.OFTConfig(r=0, oft_block_size=8, use_cayley_neumann=False, target_modules=t,
                                          init_weights=False),
    "boft": lambda t: peft.BOFTConfig(boft_block_size=4, target_modules=t, init_weights=False),
    "hra": lambda t: peft.HRAConfig(r=4, target_modules=t, init_weights=False),
    "fourierft": lambda t: peft.FourierFTConfig(n_frequency=20, scaling=30.0, target_modules=t),
    "adalora": lambda t: peft.AdaLoraConfig(init_r=6, target_r=4, lora_alpha=8, target_modules=t,
                                            init_lora_weights=False, total_step=10),
}
CONV1D = ("vera", "ia3", "fourierft", "adalora")   # the tuners peft runs on GPT-2's Conv1D
# BOFT: tnpeft stores G = R/2 (its Cayley's skew part is G − Gᵀ, peft's ½(R − Rᵀ)), so ∂L/∂G = 2 ∂L/∂R while the
# value map halves: the mapped gradient is a quarter of tnpeft's
GRAD_FACTOR = {("boft", "R.skew_factor"): 4.0}


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def peft_model(base, name, targets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(base, CONFIGS[name](targets))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad:   # scales (IA³'s l, BOFT's s) around 1, the rest around 0
                one = "ia3_l" in n or "boft_s" in n
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if one else 0.3) + (1.0 if one else 0.0))
    return pm


def peft_grads_as_checkpoint(pm) -> dict[str, dict[str, torch.Tensor]]:
    """peft's gradients in its checkpoint layout: {module path: {tensor name: grad}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for n, p in pm.named_parameters():
        if p.grad is None:
            continue
        key = n.replace(".default", "").removeprefix("base_model.model.")
        suffix = next(s for s in sorted(PEFT_FORMATS[pm.peft_config["default"].peft_type].params, key=len,
                                        reverse=True) if key.endswith("." + s))
        out.setdefault(key[: -len(suffix) - 1], {})[suffix] = p.grad
    return out


def run(model, ids):
    model.train()
    for p in model.parameters():
        p.grad = None
    out = model(ids, labels=ids)
    out.loss.backward()
    return out.logits.detach()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_imported_checkpoint_equals_peft_and_exports_back(name, tmp_path):
    base = tiny_llama()
    pm = peft_model(copy.deepcopy(base), name, T)
    pm.save_pretrained(tmp_path / "peft")
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    want = run(pm, ids)
    tm = tnpeft.import_peft(copy.deepcopy(base), tmp_path / "peft", is_trainable=True)
    got = run(tm, ids)
    assert rel(got, want) <= 1e-5
    # gradients: peft's, mapped by the format's value map, equal tnpeft's (per tensor)
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    fmt = PEFT_FORMATS[cfg["peft_type"]]
    pg = peft_grads_as_checkpoint(pm)
    layers = {p: PeftLayer(p, tm.get_submodule(p).in_features, tm.get_submodule(p).out_features) for p in pg}
    extra = {k: v for k, v in load_file(str(tmp_path / "peft" / "adapter_model.safetensors")).items()
             if not k.startswith("base_model.model.")}   # VeRA's shared projections
    mapped = fmt.load(cfg, layers, pg, extra, "grads").values
    assert mapped
    for path, state in mapped.items():
        module = tm.get_submodule(path).tn_adapters["default"]
        for key, g in state.items():
            mine = dict(module.named_parameters())[key].grad
            factor = GRAD_FACTOR.get((name.split("_")[0], key), 1.0)
            assert rel(mine, factor * g.reshape(mine.shape)) <= 1e-5, (path, key)
    # counts: the graph's (shared tensors once) = tnpeft's trainable = peft's
    graphs = {p: m.graph for p, m in tnpeft.nn.adapter_modules(tm).items()}
    count = tnpeft.graph.count_parameters(graphs)
    assert count == tnpeft.trainable_parameters(tm).trainable == pm.get_nb_trainable_parameters()[0]
    # tnpeft's native export loads in peft (missing keys would only warn: make them errors)
    tnpeft.export_peft(tm, tmp_path / "back", native=True)
    assert json.loads((tmp_path / "back" / "adapter_config.json").read_text())["peft_type"] == cfg["peft_type"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing adapter keys.*")
        warnings.filterwarnings("error", message=".*Unexpected keyword arguments.*")
        back = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "back")
    with torch.no_grad():
        assert rel(back(ids).logits, want) <= 1e-5
    # merged: tnpeft's merge equals peft's merge_and_unload
    tm.eval()
    tnpeft.merge(tm)
    with torch.no_grad():
        merged = pm.merge_and_unload().eval()(ids).logits
        assert rel(tm(ids).logits, merged) <= 1e-5
        tnpeft.unmerge(tm)
        assert rel(tm(ids).logits, want) <= 1e-4


@pytest.mark.parametrize("name", CONV1D)
def test_gpt2_conv1d_equals_peft(name, tmp_path):
    base = tiny_gpt2()
    pm = peft_model(copy.deepcopy(base), name, G)
    pm.save_pretrained(tmp_path / "peft")
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    want = run(pm, ids)
    tm = tnpeft.import_peft(copy.deepcopy(base), tmp_path / "peft", is_trainable=True)
    assert rel(run(tm, ids), want) <= 1e-5
    assert tnpeft.trainable_parameters(tm).trainable == pm.get_nb_trainable_parameters()[0]
    tnpeft.export_peft(tm, tmp_path / "back", native=True)
    back = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "back")
    with torch.no_grad():
        assert rel(back(ids).logits, want) <= 1e-5
        tm.eval()
        tnpeft.merge(tm)
        assert rel(tm(ids).logits, pm.merge_and_unload().eval()(ids).logits) <= 1e-5


def linear_twin(model):
    """The model with every GPT-2 Conv1D replaced by the nn.Linear computing the same map."""
    twin = copy.deepcopy(model)
    for path, m in list(twin.named_modules()):
        if isinstance(m, Conv1D):
            lin = torch.nn.Linear(m.weight.shape[0], m.weight.shape[1])
            with torch.no_grad():
                lin.weight.copy_(m.weight.T)
                lin.bias.copy_(m.bias)
            parent, _, child = path.rpartition(".")
            setattr(twin.get_submodule(parent), child, lin)
    return twin


@pytest.mark.parametrize("method,hp", [("loha", {"r": 3}), ("lokr", {"r": 2}), ("oft", {"block_size": 8,
                                       "param": "cayley_neumann"}), ("boft", {"block_size": 4}), ("hra", {"r": 4})])
def test_conv1d_tuners_peft_refuses_equal_their_linear_twin_and_refuse_native_export(method, hp, tmp_path):
    base = tiny_gpt2()
    tm = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig(method, G, **hp))
    ref = tnpeft.inject(linear_twin(base), tnpeft.AdapterConfig(method, G, **hp))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for (n, p), (n2, q) in zip(tm.named_parameters(), ref.named_parameters()):
            if p.requires_grad:
                assert n == n2
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if n.endswith("s.weight") else 0.0))
                q.copy_(p)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    want = run(ref, ids)
    assert rel(run(tm, ids), want) <= 1e-5
    for (n, p), (_, q) in zip(tm.named_parameters(), ref.named_parameters()):
        if p.grad is not None:
            assert rel(p.grad, q.grad) <= 1e-4, n
    with pytest.raises(ConfigError, match="Conv1D") as e:
        tnpeft.export_peft(tm, tmp_path / "x", native=True)
    assert e.value.field == "target_modules" and not (tmp_path / "x").exists()
    tm.eval()
    tnpeft.merge(tm)
    with torch.no_grad():
        assert rel(tm(ids).logits, want) <= 1e-5


@pytest.mark.parametrize("name,field,value", [("oft", "coft", True), ("boft", "boft_n_butterfly_factor", 2),
                                              ("hra", "apply_GS", True), ("loha", "rank_dropout", 0.1),
                                              ("vera", "vera_dropout", 0.2), ("oft", "block_share", True)])
def test_what_a_format_cannot_express_is_refused_naming_the_field(name, field, value, tmp_path):
    base = tiny_llama()
    peft_model(copy.deepcopy(base), name, T).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg[field] = value
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    model = copy.deepcopy(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterFileError, match=field):
        tnpeft.import_peft(model, tmp_path)
    assert model.state_dict().keys() == before.keys() and not tnpeft.adapter_names(model)


def test_native_export_of_a_method_peft_lacks_is_refused(tmp_path):
    tm = tnpeft.inject(tiny_llama(), tnpeft.AdapterConfig("quantum_peft", T, rank=2))
    with pytest.raises(ConfigError, match="no peft tuner") as e:
        tnpeft.export_peft(tm, tmp_path, native=True)
    assert e.value.field == "native"


def test_tnpeft_exact_oft_exports_as_peft_oft(tmp_path):
    # tnpeft's own OFT (exact Cayley, whole skew factor) is peft's exact OFT after packing the triangle
    base = tiny_llama()
    tm = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("oft", T, block_size=8))
    with torch.no_grad():
        for p in tm.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(5))
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = tm(ids).logits
    tnpeft.export_peft(tm, tmp_path, native=True)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["use_cayley_neumann"] is False
    back = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert rel(back(ids).logits, want) <= 1e-5


def test_a_pruned_adalora_checkpoint_imports_and_exports(tmp_path):
    # peft's own budget schedule prunes triplets (rank_pattern masks, sliced tensors, modules at rank 0)
    base = tiny_llama()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(copy.deepcopy(base), peft.AdaLoraConfig(
            init_r=6, target_r=2, lora_alpha=8, target_modules=T, init_lora_weights=False, total_step=4, tinit=0,
            tfinal=1, deltaT=1))
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.1)
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    pm.train()
    for step in range(4):
        pm(ids, labels=ids).loss.backward()
        opt.step()
        pm.base_model.update_and_allocate(step)
        opt.zero_grad()
    pm.save_pretrained(tmp_path / "p")
    masks = json.loads((tmp_path / "p" / "adapter_config.json").read_text())["rank_pattern"]
    assert any(not all(m) for m in masks.values())                      # something was pruned
    pm.eval()
    with torch.no_grad():
        want = pm(ids).logits
        tm = tnpeft.import_peft(copy.deepcopy(base), tmp_path / "p")
        assert rel(tm(ids).logits, want) <= 1e-5
        tnpeft.export_peft(tm, tmp_path / "back", native=True)
        back = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "back")
        assert rel(back(ids).logits, want) <= 1e-5


def test_half_precision_output_map_unmerges_weight_and_bias_exactly():
    # IA³ scales the bias too: in float16, dividing it back would round; the kept copies restore both
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(64, 96)).to(torch.float16)
    w0, b0 = base[0].weight.clone(), base[0].bias.clone()
    tm = tnpeft.inject(base, tnpeft.AdapterConfig("ia3", ["0"]))
    with torch.no_grad():
        for p in tm.parameters():
            if p.requires_grad:
                p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(5)) * 2 + 0.3)
    tnpeft.merge(tm)
    scale = tm[0].tn_adapters["default"].dense(scaled=True).diagonal().to(torch.float16)
    assert not torch.equal(tm[0].base_layer.bias, b0) and torch.allclose(tm[0].base_layer.bias, scale * b0, rtol=1e-2)
    assert not torch.equal((scale * b0) / scale, b0)          # the division alone would not restore it
    tnpeft.unmerge(tm)
    assert torch.equal(tm[0].base_layer.weight, w0) and torch.equal(tm[0].base_layer.bias, b0)
