"""A new adapter topology in a few lines: a tensor-train (MPO-style) update with a diagonal core.

    ΔW[out, in] = Σ_{a,b} G1[in, a] · λ[a] · G2[a, b] · G3[b, out]

It is injected, trained, merged, saved and reloaded like any built-in adapter.
Run:  .venv/bin/python examples/custom_topology.py
"""

import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import tnpeft
from tnpeft import Dense, Diagonal, Graph


@tnpeft.adapters.register("tt3")
def tt3(in_features: int, out_features: int, r: int = 4) -> Graph:
    """Three-core tensor train with a trainable diagonal; parameters r·(N + M + r + 1)."""
    return Graph([
        Dense("G1", ("in", "a"), (in_features, r), init="kaiming_uniform"),
        Diagonal("lam", ("a",), (r,), init="ones"),
        Dense("G2", ("a", "b"), (r, r), init="normal"),
        Dense("G3", ("b", "out"), (r, out_features), init="zeros"),  # start at the base model
    ], name="tt3", meta={"adapter": "tt3", "hparams": {"r": r}})


def main() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0))
    tnpeft.inject(model, tnpeft.AdapterConfig("tt3", ["c_attn", "c_fc"], r=4))
    tnpeft.print_trainable_parameters(model)
    print(tt3(64, 192, r=4))
    print("plan:", next(iter(tnpeft.nn.tn_layers(model)))[1].tn_adapters["default"].plan(4 * 32)[0])

    ids = torch.randint(0, 128, (4, 32))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(30):
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 or step == 29:
            print(f"step {step:2d}  loss {loss.item():.3f}")

    model.eval()
    y = model(ids).logits
    tnpeft.merge(model)
    print("max |merged - adapted| =", (model(ids).logits - y).abs().max().item())
    tnpeft.unmerge(model)
    with tempfile.TemporaryDirectory() as d:
        tnpeft.save_adapter(model, d)
        torch.manual_seed(0)
        fresh = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0))
        tnpeft.load_adapter(fresh.eval(), d)  # the graph is read from JSON: no builder code needed
        print("max |reloaded - adapted| =", (fresh(ids).logits - y).abs().max().item())


if __name__ == "__main__":
    main()
