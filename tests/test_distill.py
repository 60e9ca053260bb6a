import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import distill as D
from course_utils import zoo


def direct_formula(s, t, y, T, alpha):
    """The distillation loss written out position by position, with no library helpers."""
    total, n = 0.0, 0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        if label == -100:
            continue
        zs = [v / T for v in srow]
        zt = [v / T for v in trow]
        ls = math.log(sum(math.exp(v) for v in zs))
        lt = math.log(sum(math.exp(v) for v in zt))
        p = [math.exp(v - lt) for v in zt]
        kl = sum(pi * ((ti - lt) - (si - ls)) for pi, ti, si in zip(p, zt, zs))
        ce = -(srow[label] - math.log(sum(math.exp(v) for v in srow)))
        total += alpha * T * T * kl + (1 - alpha) * ce
        n += 1
    return total / n


@settings(max_examples=25, deadline=None)
@given(T=st.floats(0.5, 8.0), alpha=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_classification_loss_matches_the_direct_formula(T, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    y = torch.randint(0, 5, (6,), generator=g)
    y[1] = -100
    got = D.distillation_loss(s, t, y, temperature=T, alpha=alpha).item()
    assert got == pytest.approx(direct_formula(s, t, y, T, alpha), rel=1e-4, abs=1e-5)


def test_causal_lm_loss_shifts_like_the_model_and_skips_masked_positions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    labels[0, :2] = -100          # a prompt whose loss is masked
    labels[1, 4] = -100           # padding at the end
    got = D.distillation_loss(s, t, labels, temperature=2.0, alpha=0.3).item()
    # position i predicts label i+1
    want = direct_formula(s[:, :-1].reshape(-1, 7), t[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), 2.0, 0.3)
    assert got == pytest.approx(want, rel=1e-5)


def test_special_cases():
    s = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    assert D.distillation_loss(s, s.clone(), y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert D.distillation_loss(s, torch.randn(4, 3), y, alpha=0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(s, y).item(), rel=1e-6)
    assert D.distillation_loss(s, torch.randn(4, 3), labels=None, alpha=1.0).item() >= 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(alpha=1.5), r"alpha .* must be in \[0, 1\]"),
    (dict(alpha=0.5, labels=None), "labels are needed"),
])
def test_bad_settings(kwargs, message):
    s = torch.randn(4, 3)
    args = dict(labels=torch.tensor([0, 1, 2, 0]))
    args.update(kwargs)
    with pytest.raises(D.DistillError, match=message):
        D.distillation_loss(s, s, **args)


def test_shape_mismatch_and_all_masked():
    with pytest.raises(D.DistillError, match="must share the tokenizer"):
        D.distillation_loss(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(D.DistillError, match="no labelled positions"):
        D.distillation_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([-100, -100]))


def test_distillation_trainer_pulls_the_student_towards_the_teacher(tokenizer):
    from course_utils.config import training_args
    from course_utils.train import causal_collator, tokenize_texts

    spec = zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64, max_positions=64)
    teacher = zoo.build_model("llama", tokenizer, spec, seed=1)
    student = D.student_model("llama", tokenizer, spec=spec, seed=2)
    texts = ["The Zentrix lamp works perfectly. Five stars from me."] * 16
    data = tokenize_texts(tokenizer, texts, 32)
    batch = causal_collator(tokenizer)([data[i] for i in range(4)])

    def kl_to_teacher():
        with torch.no_grad():
            return D.distillation_loss(student(input_ids=batch["input_ids"]).logits,
                                       teacher(input_ids=batch["input_ids"]).logits, batch["labels"],
                                       temperature=1.0).item()

    before = kl_to_teacher()
    args = training_args(max_steps=15, learning_rate=1e-2, per_device_train_batch_size=8, warmup_steps=0)
    trainer = D.DistillationTrainer(model=student, args=args, train_dataset=data,
                                    data_collator=causal_collator(tokenizer), teacher_model=teacher,
                                    temperature=2.0, alpha=1.0)
    trainer.train()
    assert kl_to_teacher() < 0.5 * before
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(D.DistillError, match="needs a teacher_model"):
        D.DistillationTrainer(model=student, args=args, train_dataset=data, alpha=0.5)


def test_student_is_smaller_and_shares_the_tokenizer(tokenizer):
    student = D.student_model("qwen2", tokenizer)
    teacher = zoo.build_model("qwen2", tokenizer)
    assert zoo.count_parameters(student) < 0.5 * zoo.count_parameters(teacher)
    assert student.config.vocab_size == teacher.config.vocab_size == len(tokenizer)


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_shrink_model_copies_every_other_block(family, tokenizer):
    from course_utils.peft_methods import transformer_blocks

    teacher = zoo.build_model(family, tokenizer, zoo.TinySpec(hidden=32, layers=4, heads=2, intermediate=64))
    student = D.shrink_model(teacher)
    t_blocks, s_blocks = transformer_blocks(teacher), transformer_blocks(student)
    assert len(s_blocks) == 2
    for s_block, t_block in zip(s_blocks, [t_blocks[0], t_blocks[2]]):
        for (name, a), (_, b) in zip(s_block.state_dict().items(), t_block.state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    x = torch.randint(5, 100, (2, 6))
    assert student(input_ids=x).logits.shape == teacher(input_ids=x).logits.shape
    with pytest.raises(D.DistillError, match="distinct block indices"):
        D.shrink_model(teacher, [0, 0])
