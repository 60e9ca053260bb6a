"""Stand-ins of the hub checkpoints: the real classes and tokenizer conventions, found through the hub cache."""

import re

import pytest

from course_utils import profiles
from course_utils.paths import NOTEBOOKS_DIR, PACKAGE_DIR
from course_utils.tools.standins import STANDINS, StandInError, rehearsal_env, write_standins
from course_utils.text import PLAIN_CHAT_TEMPLATE, ensure_chat_template


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins")
    write_standins(out)
    return out


def load(cache, repo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(cache_dir=cache / "hub", local_files_only=True)
    return AutoModelForCausalLM.from_pretrained(repo, use_safetensors=True, **kw), AutoTokenizer.from_pretrained(repo, **kw)


@pytest.mark.parametrize("repo, cls, bos, eos, pad, template", [
    ("gpt2", "GPT2LMHeadModel", "<|endoftext|>", "<|endoftext|>", None, False),
    ("Qwen/Qwen2-0.5B", "Qwen2ForCausalLM", None, "<|endoftext|>", "<|endoftext|>", True),
    ("Qwen/Qwen2-0.5B-Instruct", "Qwen2ForCausalLM", None, "<|im_end|>", "<|endoftext|>", True),
    ("HuggingFaceTB/SmolLM2-360M", "LlamaForCausalLM", "<|endoftext|>", "<|endoftext|>", None, True),
])
def test_each_standin_has_its_models_class_and_token_conventions(cache, repo, cls, bos, eos, pad, template):
    model, tok = load(cache, repo)
    assert type(model).__name__ == cls
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (bos, eos, pad)
    assert bool(tok.chat_template) == template
    assert model.config.eos_token_id == tok.convert_tokens_to_ids(eos)
    assert len(tok) <= model.config.vocab_size
    if template:
        text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


def test_the_structure_is_the_real_ones():
    assert STANDINS["Qwen/Qwen2-0.5B"].config["num_key_value_heads"] < STANDINS["Qwen/Qwen2-0.5B"].config["num_attention_heads"]
    assert STANDINS["HuggingFaceTB/SmolLM2-360M"].config["tie_word_embeddings"]


def test_unknown_repo_is_a_one_line_error(tmp_path):
    with pytest.raises(StandInError, match="no stand-in for 'meta-llama/x'"):
        write_standins(tmp_path, ["meta-llama/x"])


def test_rehearsal_env_runs_the_gpu_profile_offline_on_the_cpu(tmp_path):
    env = rehearsal_env(tmp_path)
    assert env["COURSE_PROFILE"] == "gpu" and env["COURSE_DEVICE"] == "cpu" and env["HF_HUB_OFFLINE"] == "1"
    assert env["COURSE_REHEARSAL"] == "1"


def test_course_device_follows_profile_and_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert profiles.course_device("gpu") == "cpu" and profiles.use_cpu("gpu")
    monkeypatch.delenv("COURSE_DEVICE")
    assert profiles.course_device("gpu") == "cuda" and profiles.course_device("cpu") == "cpu"
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(profiles.ProfileError, match="COURSE_DEVICE must be one of"):
        profiles.course_device("gpu")


def test_a_tokenizer_without_chat_template_gets_the_plain_one(cache):
    _, tok = load(cache, "gpt2")
    ensure_chat_template(tok)
    assert tok.chat_template == PLAIN_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                                   tokenize=False)
    assert text == "User: Hi\nAssistant: Yo<|endoftext|>\n"


CUDA_LITERAL = re.compile(r"""\.cuda\(\)|\.to\(\s*["']cuda|device\s*=\s*["']cuda|device_map\s*=\s*["']cuda""")


def test_no_model_is_placed_on_cuda_outside_the_device_helper():
    import json

    hits = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.name != "profiles.py":
            hits += [f"{path.name}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1) if CUDA_LITERAL.search(line)]
    for path in sorted(NOTEBOOKS_DIR.rglob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code" and CUDA_LITERAL.search("".join(cell["source"])):
                hits.append(path.name)
    assert not hits, f"place models with profiles.place / course_device, not a literal 'cuda': {hits}"


def test_bitsandbytes_is_only_imported_where_a_4bit_load_needs_it():
    hits = [p.name for p in PACKAGE_DIR.rglob("*.py") if re.search(r"^\s*(import|from) bitsandbytes", p.read_text(), re.M)]
    assert not hits, f"import bitsandbytes lazily, inside the 4-bit path only: {hits}"
