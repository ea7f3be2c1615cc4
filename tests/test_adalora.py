"""AdaLoRA: closed-form count, the regulariser's gradient, the budget schedule reaching target_r, and
the Trainer hook-up."""

import copy

import pytest
import torch
from conftest import tiny_gpt2
from hypothesis import given
from hypothesis import strategies as st

import tnpeft
from tnpeft.adapters import AdaLoRAController, adalora
from tnpeft.adapters.adalora import budget_at
from tnpeft.errors import ConfigError
from tnpeft.runtime import GraphModule

TARGETS = ["c_attn", "c_proj", "c_fc"]


@given(n=st.integers(1, 4000), m=st.integers(1, 4000), r=st.integers(1, 32))
def test_count_closed_form(n, m, r):
    assert adalora(n, m, r=r, target_r=1).num_parameters() == r * (n + m) + r


def test_graph_is_p_lambda_q():
    g = adalora(10, 7, r=4, target_r=2, alpha=8)
    gm = GraphModule(g)
    with torch.no_grad():
        gm.E.weight.normal_()
    P, E, Q = gm.tensor("P"), gm.tensor("E"), gm.tensor("Q")
    torch.testing.assert_close(gm.dense(scaled=True), P @ torch.diag(E) @ Q * (8 / 4))


def test_schedule_is_cubic_and_ends_at_target():
    total, tinit, tfinal = 100, 10, 20
    b = [budget_at(s, total, 120, 80, tinit, tfinal, 1)[0] for s in range(1, total + 1)]
    assert b[:tinit] == [120] * tinit
    assert b[total - tfinal:] == [80] * tfinal
    assert all(x >= y for x, y in zip(b, b[1:]))  # never grows
    mid = tinit + (total - tfinal - tinit) // 2
    assert b[mid - 1] == int(40 * 0.5 ** 3 + 80)


def model_and_controller(total=30, tinit=5, tfinal=10, delta_t=2):
    base = tiny_gpt2()
    cfg = tnpeft.AdapterConfig("adalora", TARGETS, r=6, target_r=2, total_step=total, tinit=tinit, tfinal=tfinal,
                               delta_t=delta_t)
    m = tnpeft.inject(copy.deepcopy(base), cfg)
    return m, AdaLoRAController(m)


def test_regularizer_gradient_equals_autograd():
    m, ctl = model_and_controller()
    params = [t for pq in ctl._pq() for t in pq]
    for t in params:
        t.grad = None
    reg = ctl.regularization()
    want = torch.autograd.grad(reg, params)
    ctl._add_regularizer_grad()
    for t, g in zip(params, want):
        torch.testing.assert_close(t.grad, g, atol=1e-6, rtol=1e-5)


def test_allocator_reaches_target_rank_on_schedule():
    total, tinit, tfinal = 30, 5, 10
    m, ctl = model_and_controller(total, tinit, tfinal)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    ctl.attach(opt)
    ids = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    m.train()
    n_mod = len(ctl.modules)
    ranks = []
    for step in range(1, total + 1):
        loss = m(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        assert ctl.step == step
        ranks.append(sum(ctl.rank_pattern().values()))
        if step > tinit and ((step - tinit) % 2 == 0 or step > total - tfinal):
            assert ranks[-1] <= ctl.budget  # after each allocation: no more triplets than the budget
        if step > total - tfinal:
            assert ctl.budget == 2 * n_mod
    assert ranks[-1] == 2 * n_mod  # exactly target_r per layer on average
    assert ranks[tinit - 1] == 6 * n_mod  # nothing pruned before tinit (λ moved off zero)
    pattern = ctl.rank_pattern()
    y = m.eval()(ids).logits
    tnpeft.merge(m)
    torch.testing.assert_close(m(ids).logits, y, atol=1e-5, rtol=1e-5)
    assert sum(pattern.values()) == 2 * n_mod


def test_needs_total_step():
    base = tiny_gpt2()
    m = tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("adalora", ["c_attn"], r=4, target_r=2))
    with pytest.raises(ConfigError, match="total_step"):
        AdaLoRAController(m)
    with pytest.raises(ConfigError) as e:
        adalora(8, 8, r=4, target_r=5)
    assert e.value.field == "target_r"


def test_works_inside_transformers_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    m, ctl = model_and_controller(total=8, tinit=1, tfinal=3, delta_t=1)
    ids = torch.randint(0, 97, (16, 12), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": x, "labels": x} for x in ids]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no")
    Trainer(model=m, args=args, train_dataset=data, callbacks=[ctl.trainer_callback()]).train()
    assert ctl.step == 8
    assert sum(ctl.rank_pattern().values()) == 2 * len(ctl.modules)
