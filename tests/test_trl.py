"""TRL's ``SFTTrainer(peft_config=TNPeftConfig(...))`` trains with gradient checkpointing on (its
default) and its checkpoint reloads with equal logits; ``transformers.Trainer`` trains a ``PeftModel``
made with a ``TNPeftConfig`` and its checkpoint reloads likewise."""

import pytest
import torch

trl = pytest.importorskip("trl", reason="trl does not install here")
datasets = pytest.importorskip("datasets", reason="datasets does not install here")

from peft import PeftModel, get_peft_model  # noqa: E402
from tiny_llama import TARGETS, tiny_llama  # noqa: E402

import tnpeft  # noqa: E402
from tnpeft.nn import tn_layers  # noqa: E402

TEXT = ["the quick brown fox jumps over the lazy dog", "tensor networks adapt the weights of a layer"] * 8


def char_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{chr(c): i + 3 for i, c in enumerate(range(97, 123))}, " ": 29}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def reloaded_logits(checkpoint, model):
    x = torch.tensor([[5, 6, 7, 8, 9, 10, 29, 11]])
    model.eval()
    again = PeftModel.from_pretrained(tiny_llama(), checkpoint).eval()
    with torch.no_grad():
        return model(x).logits, again(x).logits


def test_sft_trainer_with_gradient_checkpointing(tmp_path):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=2e-2,
                     save_steps=3, report_to=[], use_cpu=True, max_length=48, dataset_text_field="text",
                     gradient_checkpointing=True, bf16=False, seed=0, logging_steps=1)
    trainer = SFTTrainer(model=tiny_llama(), args=args, train_dataset=datasets.Dataset.from_dict({"text": TEXT}),
                         processing_class=char_tokenizer(),
                         peft_config=tnpeft.TNPeftConfig(method="quantum_peft", target_modules=TARGETS, rank=4))
    before = {p: layer.tn_adapters["default"].L.weight.clone() for p, layer in tn_layers(trainer.model)}
    trainer.train()
    layer0 = trainer.model.base_model.model.model.layers[0]
    assert layer0.gradient_checkpointing                             # checkpointed, as TRL sets it up
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(loss == loss for loss in losses)
    moved = [not torch.equal(before[p], layer.tn_adapters["default"].L.weight) for p, layer in tn_layers(trainer.model)]
    assert all(moved)                                                # Λ starts at zero: it moved by training
    want, got = reloaded_logits(tmp_path / "checkpoint-3", trainer.model)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_trainer_on_a_peft_model(tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    pm = get_peft_model(tiny_llama(), tnpeft.TNPeftConfig(method="qpa", target_modules=TARGETS, r=2, qnn_layers=2,
                                                           hidden=[8, 8]))
    ids = torch.randint(1, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                             save_steps=3, report_to=[], use_cpu=True, gradient_checkpointing=True)
    Trainer(model=pm, args=args, train_dataset=data).train()
    want, got = reloaded_logits(tmp_path / "checkpoint-3", pm)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
