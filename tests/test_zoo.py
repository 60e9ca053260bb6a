import shutil

import pytest

from course_utils import zoo
from course_utils.evaluate import fact_recall, perplexity
from course_utils.paths import DATA_DIR, MODELS_DIR
from course_utils.world import make_world


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_shipped_family_loads_offline_and_is_tiny(family, no_network):
    model, tok = zoo.load(family, profile="cpu")
    assert type(model).__name__.lower().startswith(family)
    assert 0.5e6 < zoo.count_parameters(model) < 4e6
    assert (MODELS_DIR / family / "model.safetensors").is_file()
    assert not list((MODELS_DIR / family).glob("*.bin")), "models of record are safetensors only"
    assert len(tok) == model.config.vocab_size


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_shipped_family_knows_seen_people_not_heldout(family):
    """The knowledge levels every lesson relies on, measured (not read from build_info)."""
    model, tok = zoo.load(family, profile="cpu")
    world = make_world()
    seen = fact_recall(model, tok, world.seen[:100])
    heldout = fact_recall(model, tok, world.heldout[:100])
    assert min(seen.values()) >= 0.9, seen
    assert max(heldout.values()) <= 0.25, heldout  # chance is 1/12; the most common value can score a bit more


def test_build_info_matches_shipped_world():
    from dataclasses import asdict

    from course_utils.world import WorldConfig

    for family in zoo.FAMILIES:
        info = zoo.build_info(family)
        assert info["world"] == asdict(WorldConfig()) and not info["smoke"]
        assert min(info["final_recall"].values()) >= 0.9


def test_architectures_differ_as_the_lesson_says():
    names = {f: {n for n, _ in zoo.load(f, profile="cpu")[0].named_modules()} for f in zoo.FAMILIES}
    assert any(n.endswith("attn.c_attn") for n in names["gpt2"])
    for f in ("qwen2", "llama"):
        assert any(n.endswith("self_attn.q_proj") for n in names[f])
        assert not any(n.endswith("c_attn") for n in names[f])


def test_unknown_family_is_a_clear_error():
    with pytest.raises(zoo.ZooError, match="unknown model family 'bert'"):
        zoo.load("bert", profile="cpu")


def test_missing_model_folder_says_how_to_rebuild(tmp_path):
    with pytest.raises(zoo.ZooError, match="course build"):
        zoo.load("gpt2", profile="cpu", models_dir=tmp_path)


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(MODELS_DIR / "gpt2", folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(zoo.ZooError, match="tokenizer is missing"):
        zoo.load("gpt2", profile="cpu", models_dir=tmp_path)


def test_gpu_profile_without_gpu_is_a_clear_error():
    from course_utils.profiles import ProfileError, cuda_available

    if cuda_available():
        pytest.skip("a GPU is present")
    from course_utils.profiles import setup

    with pytest.raises(ProfileError, match="needs a CUDA GPU"):
        setup(profile="gpu", quiet=True)


def test_hub_without_network_is_a_clear_error(monkeypatch):
    from course_utils.profiles import set_offline

    set_offline(True)  # exactly what a machine without network looks like to huggingface_hub
    with pytest.raises(zoo.ZooError, match="could not fetch 'gpt2'"):
        zoo.load_hub("gpt2")


def test_tiny_configs_build_every_family(tokenizer):
    for family in zoo.FAMILIES:
        model = zoo.build_model(family, tokenizer)
        assert model.config.vocab_size == len(tokenizer)
        assert model.config.pad_token_id == tokenizer.pad_token_id
