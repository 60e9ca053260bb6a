from hypothesis import given, settings, strategies as st

from course_utils import world as W


def test_every_attribute_value_is_one_token(tokenizer):
    for values in W.ATTRIBUTES.values():
        for v in values:
            assert len(tokenizer(" " + v, add_special_tokens=False)["input_ids"]) == 1, v


def test_special_tokens_and_chat_template(tokenizer):
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Where was Mira Stroud born?"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nWhere was Mira Stroud born?<|end|>\n<|assistant|>\n"


def test_round_trip_on_world_text(tokenizer):
    for row in W.pretraining_corpus(W.make_world())[:200]:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == row["text"]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=60))
def test_round_trip_on_any_text(tokenizer, text):
    # byte-level BPE: typos, accents and debris still encode and decode exactly
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
