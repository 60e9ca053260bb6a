import torch

from course_utils.evaluate import continuation_logprobs, generate, perplexity
from course_utils.train import encode


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
