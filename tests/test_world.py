from pathlib import Path

import pytest

from course_utils import world as W
from course_utils.paths import DATA_DIR


def test_regenerating_gives_byte_identical_files(tmp_path):
    paths = W.write_world(tmp_path)
    assert len(paths) == len(W.DATA_FILES) + 2
    for path in paths:
        shipped = DATA_DIR / path.name
        assert shipped.is_file(), f"{shipped} not shipped; run `course build --data-only`"
        assert path.read_bytes() == shipped.read_bytes(), f"{path.name} differs from the shipped file"


def test_same_seed_same_world_and_other_seed_differs():
    a, b = W.make_world(W.WorldConfig(seed=3)), W.make_world(W.WorldConfig(seed=3))
    c = W.make_world(W.WorldConfig(seed=4))
    assert a.people == b.people
    assert a.people != c.people


def test_seen_and_heldout_are_disjoint_and_sized():
    world = W.make_world()
    cfg = world.config
    assert len(world.heldout) == cfg.n_heldout
    assert len(world.seen) == cfg.n_people - cfg.n_heldout
    assert not {p.name for p in world.seen} & {p.name for p in world.heldout}
    assert len({p.name for p in world.people}) == cfg.n_people


def test_pretraining_corpus_never_mentions_heldout_people():
    world = W.make_world()
    corpus = " ".join(r["text"] for r in W.pretraining_corpus(world))
    assert not [p.name for p in world.heldout if p.name in corpus]
    assert all(p.name in corpus for p in world.seen)


def test_biography_states_every_fact():
    world = W.make_world()
    import random

    person = world.seen[0]
    bio = W.biography(person, random.Random(0))
    for value in person.facts().values():
        assert value in bio


def test_reviews_balanced_and_split():
    rows = W.reviews(W.make_world())
    assert abs(sum(r["label"] for r in rows) / len(rows) - 0.5) < 0.01
    assert {r["split"] for r in rows} == {"train", "test"}


def test_safety_requests_have_both_kinds_and_refusals():
    rows = W.safety_requests(W.make_world())
    unsafe = [r for r in rows if not r["safe"]]
    safe = [r for r in rows if r["safe"]]
    assert len(unsafe) == len(safe) > 0
    assert all(r["response"] in W.REFUSALS for r in unsafe)
    assert all(r["value"] in r["response"] for r in safe)
    assert {r["category"] for r in unsafe} == set(W.UNSAFE_TEMPLATES)


@pytest.mark.parametrize("kwargs", [dict(n_heldout=600), dict(n_heldout=-1), dict(n_people=10**6)])
def test_bad_world_config_is_a_clear_error(kwargs):
    with pytest.raises(ValueError, match="WorldConfig"):
        W.WorldConfig(**kwargs)
