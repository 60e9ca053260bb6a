"""Shared pieces of the alignment tests (tests/test_alignment_*.py): tiny random-init models and a few safety rows."""

import pytest

from course_utils import alignment as A
from course_utils import world as W
from course_utils import zoo

SPEC = zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64, max_positions=128)
FAST = A.AlignConfig(steps=2, batch_size=4, max_length=48)


@pytest.fixture(scope="module")
def rows():
    return W.safety_requests(W.make_world())


@pytest.fixture(scope="module")
def small(rows):
    """A few safe and unsafe training rows, and as many test rows."""
    train, test = A.split_rows(rows, "train"), A.split_rows(rows, "test")
    pick = lambda rs, safe, n: [r for r in rs if r["safe"] == safe][:n]  # noqa: E731
    return pick(train, True, 6) + pick(train, False, 6), pick(test, True, 4) + pick(test, False, 4)


def tiny(tokenizer, family="gpt2", seed=0):
    return zoo.build_model(family, tokenizer, SPEC, seed=seed)
