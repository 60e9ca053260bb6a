"""course_utils.classify: a decoder model as a text classifier, trained the same way twice, stopped when its weights
break."""

import pytest
import torch


def _short_classifier_run():
    from course_utils.classify import ClassifierConfig, accuracy, load_classifier, predict_proba, train_classifier
    from course_utils.data import load_sample
    from course_utils.profiles import seed_everything

    seed_everything(0)
    train = load_sample("reviews.jsonl", split="train")[:32]
    test = load_sample("reviews.jsonl", split="test")[:24]
    model, tok = load_classifier("gpt2")
    trainer = train_classifier(model, tok, train, ClassifierConfig(epochs=1, batch_size=16, max_length=32, seed=3),
                               logging_steps=1)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h] + [history[-1]["train_loss"]]
    return {"losses": losses, "accuracy": accuracy(model, tok, test),
            "probs": predict_proba(model, tok, test[:8]).tolist()}


def test_same_seed_gives_the_same_numbers(one_thread):
    """Determinism: the classifier recipe that lessons 03, 04 and 07 use, run twice with one seed."""
    a, b = _short_classifier_run(), _short_classifier_run()
    assert a == b  # exact on CPU: no non-deterministic kernels are involved at this size


def test_a_classifier_whose_weights_break_stops(one_thread):
    from transformers import TrainerCallback

    from course_utils.classify import ClassifierConfig, load_classifier, train_classifier
    from course_utils.config import TrainingSettingsError
    from course_utils.data import load_sample

    class Poison(TrainerCallback):  # what an overflow would do to one weight
        def on_step_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")

    model, tok = load_classifier("gpt2")
    with pytest.raises(TrainingSettingsError, match="FiniteGuard"):
        train_classifier(model, tok, load_sample("reviews.jsonl", split="train")[:16],
                         ClassifierConfig(epochs=1, batch_size=16, max_length=32), callbacks=[Poison()])
