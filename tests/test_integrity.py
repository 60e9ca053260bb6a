"""Nothing lost, nothing silent: a damaged or mismatched model folder, a data file that is not what it seems, and
text longer than a model can take each fail in one line that names the file (and line, or field); valid input
gives exactly what it gave before.

Property tests (hypothesis) draw the damage: where a file is cut, which byte of a header changes, which config
field is altered and to what, which line of a JSONL file is bad and how. `INPUTS_TRIED` counts every input the
file feeds in (hypothesis examples included); the last test prints the count (run with `-s` to see it).
"""

import itertools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from course_utils import evaluate, text, zoo
from course_utils.data import read_jsonl, write_jsonl
from course_utils.errors import CourseError
from course_utils.paths import MODELS_DIR
from course_utils.tools import build, cli

from bad_inputs import FAST, expect_clear_error  # noqa: E402  (tests/bad_inputs.py)

INPUTS_TRIED = {"n": 0}
SLOW = settings(FAST, max_examples=12)  # each example copies and loads a model folder
FRESH = itertools.count()  # hypothesis reuses a test's tmp folder across examples: one sub-folder per example


def clear_error(fn, *args, match: str | None = None, **kwargs) -> str:
    return expect_clear_error(INPUTS_TRIED, fn, *args, match=match, **kwargs)


def copy_model(family: str, root: Path) -> Path:
    """A fresh copy of a shipped model folder, named after its family (as `zoo.load` finds it)."""
    folder = root / f"case{next(FRESH)}" / family
    shutil.copytree(MODELS_DIR / family, folder)
    return folder


def edit_config(folder, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def truncate(path, fraction: float) -> int:
    """Cut the file to `fraction` of its content (trailing whitespace does not count: cutting it loses nothing)."""
    data = path.read_bytes()
    keep = int(len(data.rstrip()) * fraction)
    path.write_bytes(data[:keep])
    return keep


@pytest.fixture(scope="module")
def shipped():
    """family -> (state dict, config dict) of the shipped models, as `load_local` gives them."""
    out = {}
    for family in zoo.FAMILIES:
        model, _ = zoo.load_local(MODELS_DIR / family)
        out[family] = ({k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict())
    return out


families = st.sampled_from(zoo.FAMILIES)
cut_at = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


# ------------------------------------------------------------------------------------------------------------
# model folders: damaged, truncated, mismatched (property-based)


@SLOW
@given(family=families, fraction=cut_at)
def test_truncated_weights_name_the_file(tmp_path, family, fraction):
    folder = copy_model(family, tmp_path)
    truncate(folder / "model.safetensors", fraction)
    clear_error(zoo.load_local, folder, match="model.safetensors")


@SLOW
@given(family=families, name=st.sampled_from(["config.json", "tokenizer.json", "tokenizer_config.json",
                                              "generation_config.json"]), fraction=cut_at)
def test_truncated_json_files_name_the_file(tmp_path, family, name, fraction):
    folder = copy_model(family, tmp_path)
    truncate(folder / name, fraction)
    clear_error(zoo.load_local, folder, match=name)


@SLOW
@given(family=families, at=st.floats(0.0, 1.0, exclude_max=True), byte=st.integers(0, 255))
def test_a_changed_header_byte_fails_clearly_or_changes_nothing(tmp_path, family, at, byte, shipped):
    """One byte of the safetensors header replaced: a one-line error, or (a space for a tab in the padding) the
    very same model. Never a model that differs silently."""
    folder = copy_model(family, tmp_path)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    pos = int(at * (8 + header_len))
    assume(data[pos] != byte)
    data[pos] = byte
    path.write_bytes(bytes(data))
    INPUTS_TRIED["n"] += 1
    try:
        model, _ = zoo.load_local(folder)
    except CourseError as err:
        assert "\n" not in str(err).strip() and "model.safetensors" in str(err), str(err)
        return
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"byte {pos} -> {byte}: {type(err).__name__}: {err}") from err
    state, _ = shipped[family]
    got = model.state_dict()
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), f"byte {pos} -> {byte}"


other_model_types = st.one_of(st.sampled_from(zoo.FAMILIES), st.sampled_from(["bert", "t5", "mistral", "", None]),
                              st.text(max_size=8))


@SLOW
@given(family=families, model_type=other_model_types)
def test_a_config_of_another_family_is_refused_before_building(tmp_path, family, model_type):
    """A llama config.json in the gpt2 folder would build a default 6.5 B-parameter Llama: refused first."""
    assume(model_type != family)
    folder = copy_model(family, tmp_path)
    edit_config(folder, model_type=model_type)
    clear_error(zoo.load_local, folder, match="model_type")


LAYER_FIELD = {"gpt2": "n_layer", "qwen2": "num_hidden_layers", "llama": "num_hidden_layers"}


@SLOW
@given(family=families, layers=st.one_of(st.integers(-3, 64), st.sampled_from([10**6, "4", 4.0, None, True])))
def test_a_changed_layer_count_never_loads(tmp_path, family, layers):
    """A config saying 3 or 5 layers over a 4-layer file would drop a layer or add a random one: refused (and a
    layer count that is not a positive integer, or missing so that the family's default of 12+ applies)."""
    assume(not (type(layers) is int and layers == 4))
    folder = copy_model(family, tmp_path)
    changes = {LAYER_FIELD[family]: layers}
    if family == "qwen2" and type(layers) is int and 0 < layers < 100:
        changes["layer_types"] = ["full_attention"] * layers  # keep the config consistent in itself
    edit_config(folder, **changes)
    msg = clear_error(zoo.load_local, folder)
    assert "config.json" in msg or "model.safetensors" in msg, msg


SIZE_FIELDS = {"gpt2": ["n_embd", "vocab_size", "n_inner", "n_positions"],
               "qwen2": ["hidden_size", "vocab_size", "intermediate_size", "num_attention_heads",
                         "num_key_value_heads"],
               "llama": ["hidden_size", "vocab_size", "intermediate_size", "num_attention_heads",
                         "num_key_value_heads", "head_dim"]}


@SLOW
@given(data=st.data(), family=families, value=st.one_of(st.integers(1, 10**9), st.integers(-5, 0)))
def test_a_changed_size_is_refused_before_a_model_is_built(tmp_path, data, family, value):
    """Sizes that disagree with the weights (up to a billion-row vocabulary) fail from the header alone."""
    field = data.draw(st.sampled_from(SIZE_FIELDS[family]))
    folder = copy_model(family, tmp_path)
    current = json.loads((folder / "config.json").read_text()).get(field)
    assume(value != current)
    edit_config(folder, **{field: value})
    msg = clear_error(zoo.load_local, folder)
    assert "config.json" in msg or "model.safetensors" in msg, msg


@SLOW
@given(family=families, extra=st.integers(1, 40))
def test_a_tokenizer_larger_than_the_embedding_table_is_refused(tmp_path, family, extra):
    from transformers import AutoTokenizer

    folder = copy_model(family, tmp_path)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_tokens([f"<extra_{i}>" for i in range(extra)])
    tok.save_pretrained(str(folder))
    clear_error(zoo.load_local, folder, match="tokenizer.json")


def test_the_shipped_models_load_exactly_as_before(shipped):
    """The checks change nothing for the shipped models: same weights as transformers loads them directly."""
    from transformers import AutoModelForCausalLM

    for family in zoo.FAMILIES:
        direct = AutoModelForCausalLM.from_pretrained(str(MODELS_DIR / family), use_safetensors=True)
        state, config = shipped[family]
        assert all(torch.equal(direct.state_dict()[k], state[k]) for k in state)
        assert direct.config.to_dict() == config
        assert zoo.check_folder(MODELS_DIR / family, family).model_type == family


# ------------------------------------------------------------------------------------------------------------
# build_info.json hashes, and `course doctor` verifying them


def test_shipped_build_info_records_every_file_hash():
    for family in zoo.FAMILIES:
        recorded = zoo.build_info(family)["sha256"]
        assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(recorded)
        assert recorded == build.file_hashes(MODELS_DIR / family)
        assert build.hash_problems(MODELS_DIR / family) == []


def test_record_hashes_keeps_every_other_key(tmp_path):
    folder = copy_model("gpt2", tmp_path)
    info = json.loads((folder / "build_info.json").read_text())
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    build.record_hashes(folder)
    after = json.loads((folder / "build_info.json").read_text())
    assert {k: v for k, v in after.items() if k != "sha256"} == {k: v for k, v in info.items() if k != "sha256"}
    assert after["sha256"]["config.json"] != info["sha256"]["config.json"]


damage = st.sampled_from(["1 KB", "append", "flip", "empty", "delete"])
hashed_files = st.sampled_from(["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                                "generation_config.json", "chat_template.jinja"])


@SLOW
@given(family=families, name=hashed_files, how=damage, at=st.floats(0.0, 1.0, exclude_max=True))
def test_doctor_names_a_changed_model_file(tmp_path, family, name, how, at):
    models = tmp_path / f"case{next(FRESH)}"
    folder = models / family
    shutil.copytree(MODELS_DIR / family, folder)
    path = folder / name
    data = bytearray(path.read_bytes())
    if how == "1 KB":
        data = data[:1024] if len(data) > 1024 else data + b"x"
    elif how == "append":
        data += b"\n"
    elif how == "flip":
        data[int(at * len(data))] ^= 0x01
    elif how == "empty":
        data = b""
    if how == "delete":
        path.unlink()
    else:
        path.write_bytes(bytes(data))
    INPUTS_TRIED["n"] += 1
    ok, msg = {m.split()[2].rstrip(":"): (ok, m) for ok, m in cli.model_folder_checks(models)
               if m.startswith("shipped model")}[family]
    assert not ok and name in msg and "\n" not in msg, msg


def test_doctor_fails_a_1kb_model_file_and_an_unknown_profile(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    weights = models / "qwen2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1024])
    monkeypatch.setenv("COURSE_PROFILE", "banana")
    checks = cli.doctor_checks(models_dir=models)
    failed = [m for ok, m in checks if not ok]
    INPUTS_TRIED["n"] += 2
    assert len(failed) == 2, failed
    assert any("banana" in m for m in failed)
    assert any("qwen2" in m and "model.safetensors" in m and "sha256" in m for m in failed)
    assert cli.main(["doctor"]) == 1  # the shipped models pass; the profile alone fails
    assert "[FAIL] profile: unknown profile 'banana'" in capsys.readouterr().out


@FAST
@given(name=st.sampled_from(["people.jsonl", "qa.jsonl", "reviews.jsonl", "safety.jsonl"]), fraction=cut_at)
def test_doctor_names_a_truncated_data_file_and_line(tmp_path, name, fraction):
    from course_utils.paths import DATA_DIR

    data_dir = tmp_path / f"case{next(FRESH)}"
    data_dir.mkdir()
    for p in DATA_DIR.glob("*.jsonl"):
        shutil.copy(p, data_dir / p.name)
    keep = truncate(data_dir / name, fraction)
    raw = (data_dir / name).read_bytes()
    assume(keep > 0 and not raw.endswith((b"\n", b"}")))  # a cut at a line's end leaves valid JSONL (rows lost)
    INPUTS_TRIED["n"] += 1
    checks = {m.split()[0]: (ok, m) for ok, m in cli.data_file_checks(data_dir)}
    ok, msg = checks[f"data_samples/{name}"]
    last_line = raw.count(b"\n") + 1
    assert not ok and f"line {last_line}:" in msg, msg
    assert all(ok for n, (ok, _) in checks.items() if n != f"data_samples/{name}")


# ------------------------------------------------------------------------------------------------------------
# JSONL edges: encodings, duplicate keys, NaN and Infinity (property-based)

json_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
rows_strategy = st.lists(st.dictionaries(st.text(max_size=6), st.one_of(json_text, st.integers(), st.booleans(),
                                                                            st.floats(allow_nan=False,
                                                                                      allow_infinity=False)),
                                         min_size=1, max_size=4), min_size=1, max_size=6)


def jsonl_with(rows, at: int, bad: bytes) -> bytes:
    """UTF-8 JSONL of `rows` with the line `bad` inserted as line `at + 1` (rows may hold U+0085 or U+2028,
    which `str.splitlines` would split on but a JSONL reader must not)."""
    lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in rows]
    lines.insert(at, bad)
    return b"".join(lines)


@FAST
@given(rows=rows_strategy)
def test_valid_rows_round_trip_unchanged(tmp_path, rows):
    path = write_jsonl(tmp_path / f"ok{next(FRESH)}.jsonl", rows)
    INPUTS_TRIED["n"] += 1
    assert read_jsonl(path) == rows


@FAST
@given(rows=rows_strategy, at=st.integers(0, 5), word=st.text(st.characters(min_codepoint=0xA0, max_codepoint=0xFF),
                                                                 min_size=1, max_size=6))
def test_a_latin1_line_names_file_and_line(tmp_path, rows, at, word):
    at = at % len(rows)
    bad = ('{"text": "' + word + '"}\n').encode("latin-1")
    try:
        bad.decode("utf-8")
        assume(False)  # these Latin-1 bytes happen to be valid UTF-8 (another text): nothing to detect
    except UnicodeDecodeError:
        pass
    path = tmp_path / f"latin{next(FRESH)}.jsonl"
    path.write_bytes(jsonl_with(rows, at, bad))
    clear_error(read_jsonl, path, match=f"{path.name} line {at + 1}: byte 0x")


@FAST
@given(rows=rows_strategy, encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32"]))
def test_a_utf16_file_names_file_and_line(tmp_path, rows, encoding):
    path = tmp_path / f"u16_{next(FRESH)}.jsonl"
    path.write_bytes(jsonl_with(rows, 0, b"").decode("utf-8").encode(encoding))
    clear_error(read_jsonl, path, match=f"{path.name} line 1: ")


@FAST
@given(rows=rows_strategy, at=st.integers(0, 5), key=st.text(max_size=5), nested=st.booleans(),
       values=st.tuples(st.integers(), st.integers()))
def test_a_duplicate_key_names_file_and_line(tmp_path, rows, at, key, nested, values):
    at = at % len(rows)
    obj = '{"%s": %d, "%s": %d}' % (json.dumps(key)[1:-1], values[0], json.dumps(key)[1:-1], values[1])
    bad = '{"outer": %s}' % obj if nested else obj
    path = tmp_path / f"dup{next(FRESH)}.jsonl"
    path.write_bytes(jsonl_with(rows, at, (bad + "\n").encode("utf-8")))
    msg = clear_error(read_jsonl, path, match=f"{path.name} line {at + 1}: duplicate key")
    assert repr(key) in msg


@FAST
@given(rows=rows_strategy, at=st.integers(0, 5), constant=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999",
                                                                           "-1e400"]), nested=st.booleans())
def test_nan_and_infinity_name_file_and_line(tmp_path, rows, at, constant, nested):
    at = at % len(rows)
    bad = '{"score": [1, {"x": %s}]}' % constant if nested else '{"score": %s}' % constant
    path = tmp_path / f"nan{next(FRESH)}.jsonl"
    path.write_bytes(jsonl_with(rows, at, (bad + "\n").encode("utf-8")))
    clear_error(read_jsonl, path, match=f"{path.name} line {at + 1}: ")


@FAST
@given(value=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_write_jsonl_refuses_what_read_jsonl_would(tmp_path, value):
    clear_error(write_jsonl, tmp_path / "x.jsonl", [{"a": 1}, {"score": value}], match="row 1")


# ------------------------------------------------------------------------------------------------------------
# limits where text enters: encode(max_tokens), positions in perplexity / generate / continuation_logprobs


@pytest.fixture(scope="module")
def gpt2_model():
    return zoo.load("gpt2", profile="cpu")


def text_of_tokens(tok, n: int, add_eos: bool = True) -> str:
    """A text that `encode` (BOS, and EOS with `add_eos`) turns into exactly `n` ids: " lamp" is one token."""
    s = " lamp" * (n - 1 - add_eos)
    assert len(text.encode(tok, s, add_eos=add_eos)) == n
    return s


@FAST
@given(extra=st.integers(1, 3000), batch=st.integers(1, 4), where=st.integers(0, 3))
def test_over_long_text_is_a_one_line_error(gpt2_model, extra, batch, where):
    model, tok = gpt2_model
    limit = model.config.n_positions
    long_text = text_of_tokens(tok, limit) + " lamp" * extra  # one past the limit, or far past it
    texts = ["Mira Stroud was born in Ashdale."] * 4
    texts[where] = long_text
    clear_error(evaluate.perplexity, model, tok, texts, batch_size=batch, match=f"perplexity: text {where}")
    clear_error(evaluate.generate, model, tok, texts, max_new_tokens=1, batch_size=batch,
                match=f"generate: prompt {where}")
    clear_error(evaluate.continuation_logprobs, model, tok, texts, [" x"] * 4, batch_size=batch,
                match=f"prompt {where}")
    clear_error(evaluate.continuation_logprobs, model, tok, ["Mira"] * 4, texts, batch_size=batch,
                match=f"prompt {where} with its continuation")


@FAST
@given(prompt_tokens=st.integers(1, 256), new=st.integers(1, 600))
def test_generate_needs_room_for_the_new_tokens(gpt2_model, prompt_tokens, new):
    model, tok = gpt2_model
    limit = model.config.n_positions
    prompt = text_of_tokens(tok, prompt_tokens, add_eos=False)
    if prompt_tokens + new > limit:
        clear_error(evaluate.generate, model, tok, [prompt], max_new_tokens=new, match="positions")
    else:
        INPUTS_TRIED["n"] += 1
        assume(new <= 8)  # generating hundreds of tokens is slow; the boundary test below covers the edge
        assert isinstance(evaluate.generate(model, tok, [prompt], max_new_tokens=new)[0], str)


def test_a_text_exactly_at_the_limit_still_works(gpt2_model):
    model, tok = gpt2_model
    limit = model.config.n_positions
    at_limit = text_of_tokens(tok, limit)
    assert math.isfinite(evaluate.perplexity(model, tok, [at_limit]))
    prompt = text_of_tokens(tok, limit - 2, add_eos=False)  # and 2 new tokens: exactly the limit
    assert isinstance(evaluate.generate(model, tok, [prompt], max_new_tokens=2)[0], str)
    clear_error(evaluate.generate, model, tok, [prompt], max_new_tokens=3, match="needs at least 257 positions")
    INPUTS_TRIED["n"] += 2


def test_zz_report_how_many_inputs_were_tried():
    print(f"\nintegrity inputs tried: {INPUTS_TRIED['n']}")
    assert INPUTS_TRIED["n"] > 250
