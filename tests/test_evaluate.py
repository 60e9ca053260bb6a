import pytest
import torch

from course_utils import zoo
from course_utils.data import DataError
from course_utils.evaluate import (continuation_logprobs, fact_recall, fast_fact_recall, generate, knowledge_probe,
                                   perplexity)
from course_utils.text import encode

SMALL = zoo.TinySpec(hidden=32, layers=2, heads=2, intermediate=64, max_positions=64)


def test_continuation_logprob_matches_direct_computation(gpt2):
    model, tok = gpt2
    prompt, cont = "Mira Stroud was born in", " Ashdale."
    got = continuation_logprobs(model, tok, [prompt, "x"], [cont, " y"])[0]
    ids = encode(tok, prompt + cont)
    n_prompt = len(encode(tok, prompt))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    want = sum(logp[i - 1, ids[i]].item() for i in range(n_prompt, len(ids)))
    assert abs(got - want) < 1e-4


def test_perplexity_orders_known_and_random_text(gpt2):
    from course_utils.data import load_sample

    model, tok = gpt2
    known = [r["text"] for r in load_sample("generic_eval.jsonl")[:50]]
    scrambled = [" ".join(reversed(t.split())) for t in known]
    assert 1.0 < perplexity(model, tok, known) < perplexity(model, tok, scrambled)


def test_generation_is_deterministic_and_batch_independent(gpt2):
    model, tok = gpt2
    prompts = ["The weather in Veltra was", "Mira Stroud works as a", "Hello"]
    a = generate(model, tok, prompts, max_new_tokens=8, batch_size=3)
    b = generate(model, tok, prompts, max_new_tokens=8, batch_size=1)
    assert a == b and all(isinstance(x, str) for x in a)


def test_generation_is_exactly_greedy_decoding_of_the_model(gpt2):
    """The position checks change nothing for valid prompts: same tokens as calling `model.generate` directly."""
    from course_utils.text import pad_batch, pad_id

    model, tok = gpt2
    prompts = ["The weather in Veltra was", "Mira Stroud works as a"]
    ids, mask = pad_batch([encode(tok, p) for p in prompts], pad_id(tok), left=True)
    with torch.no_grad():
        raw = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8,
                             pad_token_id=pad_id(tok), eos_token_id=tok.eos_token_id)
    want = [t.strip() for t in tok.batch_decode(raw[:, ids.shape[1]:], skip_special_tokens=True)]
    assert generate(model, tok, prompts, max_new_tokens=8) == want


def test_encode_with_a_limit_equals_the_cut_encoding(gpt2):
    _, tok = gpt2
    long_text = "Mira Stroud was born in Ashdale. " * 5000
    assert encode(tok, long_text, add_eos=True, max_tokens=64) == encode(tok, long_text, add_eos=True)[:64]


def test_over_long_input_is_a_one_line_error(gpt2):
    import pytest

    from course_utils.data import DataError

    model, tok = gpt2
    too_long = "lamp " * 400
    with pytest.raises(DataError, match=r"perplexity: text 1 \(with BOS and EOS\) needs at least 257 positions"):
        perplexity(model, tok, ["fine", too_long])
    with pytest.raises(DataError, match=r"generate: prompt 0 with max_new_tokens=250 needs at least"):
        generate(model, tok, ["Mira Stroud was born in Ashdale, where"], max_new_tokens=250)
    with pytest.raises(DataError, match=r"continuation_logprobs: prompt 0 with its continuation needs"):
        continuation_logprobs(model, tok, ["Mira"], [too_long])


def test_fast_fact_recall_equals_fact_recall(tokenizer, gpt2):
    from course_utils.world import make_world

    world = make_world()
    people = world.seen[:12] + world.heldout[:12]
    shipped, shipped_tok = gpt2
    assert fast_fact_recall(shipped, shipped_tok, people) == fact_recall(shipped, shipped_tok, people)
    model = zoo.build_model("qwen2", tokenizer, SMALL, seed=3)
    with torch.no_grad():  # a random model predicts nearly uniformly; sharpen it so ranks are not near-ties
        model.get_output_embeddings().weight.mul_(20)
    assert fast_fact_recall(model, tokenizer, people) == fact_recall(model, tokenizer, people)


def test_knowledge_probe_refuses_to_choose_on_the_people_it_judges():
    from course_utils.world import make_world

    world = make_world()
    old, new = world.seen[:4], world.heldout[:2]
    with pytest.raises(DataError, match="validation and test people overlap"):
        knowledge_probe(None, old, new, val_people=old[:2])
    with pytest.raises(DataError, match="at least one old and one new person"):
        knowledge_probe(None, [], new)
