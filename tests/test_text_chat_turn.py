"""`text.chat_turn` is the course's one chat turn: every caller gets exactly the string its old copy made.

Before issue 29 there were three copies: `text.chat_turn` and `instruct.chat_prompt` (the template's turn, BOS added
later as an id) and `alignment.chat_prompt` (BOS written in front as text, for trl's string rows). They are kept
here, verbatim, as the reference, over the course tokenizer and the stand-ins' tokenizer conventions."""

import pytest

from course_utils import world as W
from course_utils.data import DataError
from course_utils.paths import TOKENIZER_DIR
from course_utils.text import bos_id, chat_turn, encode, ensure_chat_template
from course_utils.tokenizer import load_tokenizer
from course_utils.tools.standins import STANDINS, standin_tokenizer


def old_turn(tokenizer, message):  # text.chat_turn, instruct.chat_prompt, constitution's critic question
    return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)


def old_alignment_prompt(tokenizer, request):  # alignment.chat_prompt
    return tokenizer.convert_ids_to_tokens(bos_id(tokenizer)) + old_turn(tokenizer, request)


TOKENIZERS = {"course": lambda: load_tokenizer(TOKENIZER_DIR),
              **{repo: (lambda s=spec: ensure_chat_template(standin_tokenizer(s))) for repo, spec in STANDINS.items()}}
MESSAGES = [r["prompt"] for r in W.safety_requests(W.make_world())[::7]] + ["Where was Mira Stroud born?", " x "]


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tok(request):
    return TOKENIZERS[request.param]()


def test_chat_turn_gives_every_caller_its_old_string(tok):
    for message in MESSAGES:
        assert chat_turn(tok, message) == old_turn(tok, message)
        assert chat_turn(tok, message, bos=True) == old_alignment_prompt(tok, message)


def test_bos_as_text_and_bos_as_id_give_the_same_ids(tok):
    """Training rows (BOS written as text) and `evaluate.generate` (BOS added as an id) see the same ids."""
    for message in MESSAGES:
        as_text = tok(chat_turn(tok, message, bos=True), add_special_tokens=False)["input_ids"]
        assert as_text == encode(tok, chat_turn(tok, message))


def test_a_template_that_writes_bos_gets_it_once():
    tok = load_tokenizer(TOKENIZER_DIR)
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    text = chat_turn(tok, "Hi", bos=True)
    assert text.startswith(tok.bos_token) and text.count(tok.bos_token) == 1


@pytest.mark.parametrize("message", ["", "   ", None])
def test_an_empty_message_is_refused(message):
    with pytest.raises(DataError, match="chat_turn: empty message"):
        chat_turn(load_tokenizer(TOKENIZER_DIR), message)
