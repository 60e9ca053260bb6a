"""Unit tests for course_utils.alignment.models: loading the model to align, and chat generation (tiny random-init
models, fast)."""

import pytest
import torch

from course_utils import alignment as A
from course_utils.data import DataError
from course_utils import zoo

from alignment_helpers import rows, small, tiny  # noqa: F401  (tests/alignment_helpers.py; fixtures too)


def test_chat_generate_stops_at_end_of_turn(tokenizer):
    """A model that always says 'Veltra <|end|> Morwick ...' must answer just 'Veltra'."""
    model = tiny(tokenizer)
    veltra, end = tokenizer.convert_tokens_to_ids("ĠVeltra"), tokenizer.convert_tokens_to_ids(A.END)
    morwick = tokenizer.convert_tokens_to_ids("ĠMorwick")
    calls = {"n": 0}

    def scripted(module, args, output):  # logits favour Veltra, then <|end|>, then Morwick forever
        logits = torch.full_like(output.logits, -1e4)
        logits[:, -1, [veltra, end, morwick][min(calls["n"], 2)]] = 0.0
        calls["n"] += 1
        output.logits = logits
        return output

    handle = model.register_forward_hook(scripted)
    try:
        assert A.chat_generate(model, tokenizer, ["Where?"], max_new_tokens=6) == ["Veltra"]
    finally:
        handle.remove()
    assert end in A.stop_ids(tokenizer) and tokenizer.eos_token_id in A.stop_ids(tokenizer)
    with pytest.raises(A.AlignmentError, match="no requests"):
        A.chat_generate(model, tokenizer, [])


def test_end_of_turn_falls_back_to_eos(tokenizer):
    assert A.end_of_turn(tokenizer) == A.END

    class NoChatMarkers:
        eos_token = "</s>"

        def get_vocab(self):
            return {"</s>": 0, "hello": 1}

    assert A.end_of_turn(NoChatMarkers()) == "</s>"


def test_load_chat_model_cpu_and_unknown_gpu_family():
    model, tok = A.load_chat_model("gpt2", profile="cpu")
    assert A.end_of_turn(tok) == A.END and model.config.vocab_size >= len(tok)
    qa, _ = zoo.load_qa("gpt2")  # the cpu profile aligns lesson 06's Q/A base, which can answer questions
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), qa.state_dict().values()))
    with pytest.raises(A.AlignmentError, match="no instruct checkpoint for 'llama'"):
        A.load_chat_model("llama", profile="gpu")


def legacy_chat_generate(model, tokenizer, requests, max_new_tokens=20, batch_size=64, temperature=None):
    """`chat_generate`'s own loop before issue 29 made it a wrapper of `evaluate.generate` (the reference)."""
    from course_utils.text import bos_id, pad_batch, pad_id

    pad = pad_id(tokenizer)
    decoding = {"do_sample": False} if temperature is None else {"do_sample": True, "temperature": temperature,
                                                                  "top_k": 0}
    out = []
    with torch.no_grad():
        for start in range(0, len(requests), batch_size):
            texts = [tokenizer.convert_ids_to_tokens(bos_id(tokenizer)) + tokenizer.apply_chat_template(
                [{"role": "user", "content": r}], tokenize=False, add_generation_prompt=True)
                for r in requests[start:start + batch_size]]
            ids, mask = pad_batch([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], pad, left=True)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=A.stop_ids(tokenizer), **decoding)
            out += tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return [o.strip() for o in out]


def test_chat_generate_answers_as_its_old_loop_did(tokenizer, small):
    """Greedy, and sampled under the same seed: the same answers as the loop `chat_generate` had of its own."""
    train, test = small
    model = tiny(tokenizer)
    requests = [r["prompt"] for r in train + test]
    assert A.chat_generate(model, tokenizer, requests, 8, batch_size=5) == legacy_chat_generate(
        model, tokenizer, requests, 8, batch_size=5)
    torch.manual_seed(3)
    sampled = A.chat_generate(model, tokenizer, requests, 8, batch_size=5, temperature=1.0)
    torch.manual_seed(3)
    assert sampled == legacy_chat_generate(model, tokenizer, requests, 8, batch_size=5, temperature=1.0)


def test_an_over_long_request_is_one_line_data_error(tokenizer):
    """A request that leaves no room for the answer within the model's 128 positions fails before generation."""
    model = tiny(tokenizer)
    with pytest.raises(DataError, match=r"generate: prompt 1 with max_new_tokens=20 needs at least \d+ positions "
                                        r"but the model has only 128") as err:
        A.chat_generate(model, tokenizer, ["Where was Mira Stroud born?", "Mira " * 200])
    assert "\n" not in str(err.value)
