"""course_utils.text: the course's conventions for turning text into ids (BOS first, optional EOS, no other
specials), cut where the text enters so a huge text is never tokenised whole, and padded batches."""

from hypothesis import given
from hypothesis import strategies as st

from course_utils import text

from bad_inputs import FAST, expect_clear_error  # noqa: E402  (tests/bad_inputs.py)

INPUTS_TRIED = {"n": 0}


def clear_error(fn, *args, match: str | None = None, **kwargs) -> str:
    return expect_clear_error(INPUTS_TRIED, fn, *args, match=match, **kwargs)


words = st.lists(st.sampled_from(["Mira", "Stroud", "was", "born", "in", "Ashdale.", "the", "lamp", "works",
                                  "well", "ü", "日本", "!", "42", "  ", "\n", "<|endoftext|>", "don't"]),
                 min_size=1, max_size=60)


@FAST
@given(parts=words, repeat=st.integers(1, 300), n=st.integers(1, 40), bos=st.booleans(), eos=st.booleans())
def test_encode_with_a_limit_is_exactly_the_cut_full_encoding(gpt2, parts, repeat, n, bos, eos):
    _, tok = gpt2
    s = " ".join(parts * repeat)
    INPUTS_TRIED["n"] += 1
    assert text.encode(tok, s, bos, eos, max_tokens=n) == text.encode(tok, s, bos, eos)[:n]


def test_encode_with_a_limit_does_not_tokenise_a_huge_text(gpt2):
    import time

    _, tok = gpt2
    huge = "The lamp from Kestrel works well. " * 600_000  # 20 MB
    start = time.perf_counter()
    ids = text.encode(tok, huge, max_tokens=64)
    assert len(ids) == 64 and time.perf_counter() - start < 0.5
    assert ids == text.encode(tok, huge[:2000])[:64]
    INPUTS_TRIED["n"] += 1
    clear_error(text.encode, tok, "x", max_tokens=0, match="max_tokens")


def test_bos_and_pad_follow_each_tokenizer_convention(gpt2):
    _, tok = gpt2
    ids = text.encode(tok, "The lamp works.", add_eos=True)
    assert ids[0] == text.bos_id(tok) and ids[-1] == tok.eos_token_id
    assert text.encode(tok, "The lamp works.", add_bos=False) == ids[1:-1]
    assert text.pad_id(tok) == (tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def test_pad_batch_pads_on_the_side_asked_and_masks_the_padding():
    ids, mask = text.pad_batch([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = text.pad_batch([[5, 6, 7], [8]], pad=0, left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
