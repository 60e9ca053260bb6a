import json
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


def test_a_config_of_another_family_is_refused_before_anything_is_built(tmp_path):
    """A llama config.json in the gpt2 folder would build a default-size (6.5 B-parameter) Llama and fill memory."""
    folder = tmp_path / "gpt2"
    shutil.copytree(MODELS_DIR / "gpt2", folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(zoo.ZooError, match=r"config\.json: model_type 'llama' in the gpt2 folder"):
        zoo.load("gpt2", profile="cpu", models_dir=tmp_path)


def test_a_changed_layer_count_is_refused(tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(MODELS_DIR / "llama", folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(zoo.ZooError, match=r"model\.safetensors: holds 4 layers but config\.json says 3"):
        zoo.load_local(folder)


def test_a_truncated_weights_file_is_named(tmp_path):
    folder = tmp_path / "qwen2"
    shutil.copytree(MODELS_DIR / "qwen2", folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(zoo.ZooError, match=r"model\.safetensors: truncated or damaged"):
        zoo.load_local(folder)


def test_the_header_alone_gives_every_shape():
    for family in zoo.FAMILIES:
        shapes = zoo.safetensors_shapes(MODELS_DIR / family / "model.safetensors")
        model, _ = zoo.load(family, profile="cpu")
        assert all(list(p.shape) == shapes[n] for n, p in model.state_dict().items() if n in shapes)


def test_the_deep_variant_is_shipped_intact_and_knows_the_world(no_network):
    """Lesson 04 asks 'upper or lower blocks?' of the 8-block Qwen2; it must know what its 4-block sibling knows."""
    from course_utils.tools.build import hash_problems

    folder = zoo.model_dir("qwen2", variant="deep")
    assert folder == MODELS_DIR / "qwen2_deep" and hash_problems(folder) == []
    zoo.check_folder(folder, "qwen2")
    model, tok = zoo.load_variant("qwen2", "deep", profile="cpu")
    assert model.config.num_hidden_layers == zoo.DEEP_SPEC.layers == 8
    assert model.config.hidden_size == zoo.TinySpec().hidden
    world = make_world()
    assert min(fact_recall(model, tok, world.seen[:100]).values()) >= 0.9
    assert max(fact_recall(model, tok, world.heldout[:100]).values()) <= 0.25


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(zoo.ZooError, match="unknown model variant 'tall'"):
        zoo.model_dir("qwen2", variant="tall")
