"""Reliability across the package: in the cpu profile, set-up, loading, training and evaluation never touch the
network. (A killed run resuming, the finite guard and repeated runs repeating are tested with their modules:
tests/test_train.py and tests/test_classify.py.)"""

import pytest


def test_lesson_code_runs_with_the_network_blocked(no_network, one_thread, tmp_path):
    """Offline: in the cpu profile, set-up, loading shipped models, training and evaluation never open a socket."""
    import socket

    from transformers import Trainer

    from course_utils import evaluate, profiles, zoo
    from course_utils.classify import load_classifier, predict_proba
    from course_utils.data import load_sample
    from course_utils.config import training_args
    from course_utils.train import causal_collator, tokenize_texts
    from course_utils.world import make_world

    with pytest.raises(AssertionError, match="network access attempted"):  # the guard itself works
        socket.create_connection(("huggingface.co", 443), timeout=1)
    env = profiles.setup(profile="cpu", seed=0, quiet=True)
    assert env.offline and env.profile == "cpu"
    model, tok = zoo.load("llama")
    texts = [r["text"] for r in load_sample("pretrain_corpus.jsonl")[:32]]
    trainer = Trainer(model=model, args=training_args(str(tmp_path), max_steps=3, per_device_train_batch_size=8),
                      train_dataset=tokenize_texts(tok, texts, 48), data_collator=causal_collator(tok))
    trainer.train()
    assert trainer.state.global_step == 3
    assert evaluate.perplexity(model, tok, texts[:8]) > 1.0
    recall = evaluate.fact_recall(model, tok, make_world().seen[:4], attributes=["birth_city"])
    assert 0.0 <= recall["birth_city"] <= 1.0
    assert len(evaluate.generate(model, tok, ["Cassia Jessham was born in"], max_new_tokens=3)) == 1
    clf, ctok = load_classifier("qwen2")
    assert predict_proba(clf, ctok, [{"text": "The lamp works."}]).shape == (1, 2)
