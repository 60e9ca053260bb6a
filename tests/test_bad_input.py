"""Bad input, everywhere: every public helper answers malformed rows, wrong types, empty data, out-of-range rates
and ratios, unknown names and a tokenizer that does not fit the model with a one-line `CourseError` that names
what is wrong and where; never a traceback from deep inside a library, never a silently wrong result.

Property tests (hypothesis) draw the bad values; a table of cases covers the rest. `INPUTS_TRIED` counts every bad
input the file feeds in (hypothesis examples included); the last test prints the count (run with `-s` to see it).
"""

import json
import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from course_utils import bias, classify, costs, data, distill, evaluate, forgetting, layers, noise, overfitting
from course_utils import peft_methods, profiles, quality, results, tokenizer as course_tokenizer, train, world, zoo
from course_utils import config, errors, text

from bad_inputs import FAST, expect_clear_error  # noqa: E402  (tests/bad_inputs.py)

INPUTS_TRIED = {"n": 0}


def clear_error(fn, *args, match: str | None = None, **kwargs) -> str:
    return expect_clear_error(INPUTS_TRIED, fn, *args, match=match, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# strategies

# numbers that are not a rate in [0, 1] (and things that are not numbers at all)
bad_rates = st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1.0 + 1e-9, allow_nan=False),
    st.just(float("nan")), st.just(float("inf")), st.text(max_size=5), st.none(), st.lists(st.floats(0, 1), max_size=2))
not_text = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
# a row that is not a dict, or a dict missing the keys a helper needs
not_a_row = st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3))
unknown_name = st.text(min_size=1, max_size=12).filter(lambda s: s not in zoo.FAMILIES and s.strip().lower() not in
                                                       ("cpu", "gpu"))


def review_rows(n=8):
    products = ["lamp", "kettle", "chair", "radio", "phone", "clock", "fan", "desk"][:n]
    return [{"text": f"The {w} from Kestrel works well.", "label": i % 2, "company": "Kestrel", "city": "Quarrow",
             "product": w} for i, w in enumerate(products)]


@pytest.fixture(scope="module")
def tok():
    from course_utils.paths import TOKENIZER_DIR

    return course_tokenizer.load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def model():
    m, _ = zoo.load("gpt2", profile="cpu")
    return m


@pytest.fixture(scope="module")
def small_vocab_model():
    """A random tiny model whose vocabulary (64 ids) is far smaller than the course tokenizer's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=1))


# ------------------------------------------------------------------------------------------------------------
# rates and ratios out of range (property-based)


@FAST
@given(rate=bad_rates)
def test_noise_rates_out_of_range(rate):
    rows = review_rows()
    clear_error(noise.flip_labels, rows, rate, match="flip_labels")
    clear_error(noise.grammar_noise, rows, rate, match="grammar")
    clear_error(noise.typo_noise, rows, 0.5, word_rate=rate, match="word_rate")
    clear_error(noise.inject, rows, "label", rate, match="rate")


@FAST
@given(ratio=st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1.0, allow_nan=False),
                       st.just(float("nan")), st.text(max_size=3), st.none()))
def test_rehearsal_ratio_out_of_range(ratio):
    clear_error(forgetting.rehearsal_count, 10, ratio, match="ratio")
    clear_error(forgetting.mix_rehearsal, ["new"] * 4, ["old"] * 4, ratio, match="ratio")


@FAST
@given(rate=bad_rates)
def test_bias_and_quality_rates_out_of_range(rate):
    rows = review_rows()
    clear_error(bias.skew_labels, rows, "company", "Kestrel", rate, match="flip_rate")
    clear_error(lambda: quality.corrupt(rows, quality.CorruptionConfig(flip_rate=rate)), match="flip_rate")
    clear_error(quality.drop_near_duplicates, rows, threshold=rate, match="threshold")
    clear_error(quality.augment, rows, alpha=rate, match="alpha")


@FAST
@given(p=bad_rates)
def test_dropout_and_distillation_weights_out_of_range(p):
    clear_error(overfitting.dropout_overrides, "gpt2", p, match="dropout")
    clear_error(peft_methods.lora_config, "gpt2", dropout=p, match="dropout")
    logits = torch.zeros(1, 3, 8)
    clear_error(distill.distillation_loss, logits, logits, alpha=p, match="alpha")


@FAST
@given(share=bad_rates)
def test_test_share_out_of_range(share):
    clear_error(costs.qa_task, _world(), test_share=share, match="test_share")


@FAST
@given(t=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(float("nan")), st.none(), st.text(max_size=2)))
def test_distillation_temperature_must_be_positive(t):
    logits = torch.zeros(1, 3, 8)
    clear_error(distill.distillation_loss, logits, logits, temperature=t, match="temperature")


# ------------------------------------------------------------------------------------------------------------
# malformed rows and wrong types (property-based)


@FAST
@given(bad=not_a_row, at=st.integers(0, 7))
def test_row_helpers_refuse_a_malformed_row(bad, at):
    rows = review_rows()
    rows[at] = bad
    for fn, args in [(noise.flip_labels, (rows, 0.2)), (noise.grammar_noise, (rows, 0.2)),
                     (noise.typo_noise, (rows, 0.2)), (quality.rule_filter, (rows,)),
                     (quality.drop_exact_duplicates, (rows,)), (quality.drop_contradictions, (rows,)),
                     (quality.drop_near_duplicates, (rows,)), (quality.augment, (rows,)),
                     (bias.label_rates, (rows, "company")),
                     (bias.balance, (rows, "company")), (bias.skew_labels, (rows, "company", "Kestrel", 0.5)),
                     (bias.counterfactual_rows, (rows, "company", ["Kestrel", "Ashby"])),
                     (errors.check_rows, (rows, "check_rows", ["text"])), (results.save_results, ("99_x", rows))]:
        clear_error(fn, *args, match=f"row {at}")


@FAST
@given(value=not_text, at=st.integers(0, 7))
def test_row_helpers_refuse_a_text_that_is_not_text(value, at):
    rows = review_rows()
    rows[at]["text"] = value
    for fn, args in [(noise.grammar_noise, (rows, 0.5)), (noise.typo_noise, (rows, 0.5)),
                     (quality.rule_filter, (rows,)), (quality.drop_exact_duplicates, (rows,)),
                     (quality.drop_near_duplicates, (rows,)), (quality.augment, (rows,)),
                     (bias.counterfactual_rows, (rows, "company", ["Kestrel", "Ashby"]))]:
        clear_error(fn, *args, match=f"row {at}")


@FAST
@given(label=st.one_of(st.text(max_size=4), st.none(), st.floats(0.1, 0.9), st.integers(2, 99),
                       st.integers(-99, -1)), at=st.integers(0, 7))
def test_classifier_rows_need_a_valid_integer_label(tok, label, at):
    rows = review_rows()
    rows[at]["label"] = label
    clear_error(classify.tokenize_labelled, tok, rows, num_labels=2, match=f"row {at}")


@FAST
@given(value=not_text)
def test_text_helpers_refuse_non_text(tok, model, value):
    clear_error(text.encode, tok, value, match="str")
    clear_error(train.tokenize_texts, tok, ["ok", value], match="text 1")
    clear_error(train.tokenize_prompt_completion, tok, ["ok", value], ["a", "b"], match="1")
    clear_error(evaluate.perplexity, model, tok, ["fine text", value], match="perplexity")
    clear_error(evaluate.generate, model, tok, [value], max_new_tokens=1, match="generate")
    clear_error(classify.predict_proba, model, tok, [{"text": value}], match="row 0")


@FAST
@given(line=st.one_of(st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and not _is_json_object(s)),
                      st.builds(json.dumps, st.one_of(st.integers(), st.lists(st.integers(), max_size=3)))))
def test_read_jsonl_names_file_and_line(tmp_path_factory, line):
    path = tmp_path_factory.mktemp("jsonl") / "rows.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n' + line.replace("\n", " ").replace("\r", " ")
                    .replace("\x0b", " ").replace("\x0c", " ").replace("\x1c", " ").replace("\x1d", " ")
                    .replace("\x1e", " ").replace("\x85", " ").replace("\u2028", " ").replace("\u2029", " ") + "\n")
    clear_error(data.read_jsonl, path, match="rows.jsonl line 2")


def _is_json_object(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except ValueError:
        return False


@FAST
@given(bad=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_write_jsonl_refuses_rows_that_are_not_objects(tmp_path_factory, bad):
    clear_error(data.write_jsonl, tmp_path_factory.mktemp("w") / "x.jsonl", [{"a": 1}, bad], match="row 1")


# ------------------------------------------------------------------------------------------------------------
# unknown names (property-based)


@FAST
@given(name=unknown_name)
def test_unknown_family_names(name):
    clear_error(zoo.load, name, match="family")
    clear_error(zoo.check_family, name, match="family")
    clear_error(classify.load_classifier, name, match="family")
    clear_error(peft_methods.lora_config, name, match="family")
    clear_error(overfitting.dropout_overrides, name, 0.1, match="family")
    clear_error(profiles.choose_profile, name, match="profile")


@FAST
@given(name=st.text(min_size=1, max_size=12).filter(lambda s: s not in ("label", "grammar", "typo", "none",
                                                                     *world.ATTRIBUTES)))
def test_unknown_noise_kind_and_method_names(name):
    rows = review_rows()
    clear_error(noise.inject, rows, name, 0.2, match="noise")
    clear_error(evaluate.fact_recall, None, None, _world().seen[:2], attributes=[name], match="attribute")
    clear_error(bias.label_rates, rows, name + "_x", match="attribute")


@FAST
@given(name=st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=2), max_size=2)))
def test_names_of_the_wrong_type(name):
    clear_error(zoo.load, name, match="family")
    if name is not None:  # None means "the default profile"
        clear_error(profiles.choose_profile, name, match="profile")
    clear_error(results.save_results, name, [{"x": 1}], match="lesson")


# ------------------------------------------------------------------------------------------------------------
# empty datasets and the remaining cases, one by one


def _world():
    if "w" not in _CACHE:
        _CACHE["w"] = world.make_world()
    return _CACHE["w"]


_CACHE: dict = {}


def cases(tok, model, small_vocab_model, tmp_path):
    """(id, thunk, words the message must contain)."""
    rows = review_rows()
    w = _world()
    return [
        # empty datasets
        ("flip_labels empty", lambda: noise.flip_labels([], 0.1), "empty"),
        ("grammar_noise empty", lambda: noise.grammar_noise([], 0.1), "empty"),
        ("rule_filter empty", lambda: quality.rule_filter([]), "empty"),
        ("corrupt empty", lambda: quality.corrupt([]), "empty"),
        ("augment empty", lambda: quality.augment([]), "empty"),
        ("label_rates empty", lambda: bias.label_rates([], "company"), "empty"),
        ("balance empty", lambda: bias.balance([], "company"), "empty"),
        ("mix_sources empty", lambda: bias.mix_sources({}), "at least one row"),
        ("mix_rehearsal empty", lambda: forgetting.mix_rehearsal([], ["old"], 0.1), "empty"),
        ("tokenize_texts empty", lambda: train.tokenize_texts(tok, []), "no texts"),
        ("tokenize_prompt_completion empty", lambda: train.tokenize_prompt_completion(tok, [], []), "no examples"),
        ("tokenize_labelled empty", lambda: classify.tokenize_labelled(tok, []), "empty"),
        ("train_classifier empty", lambda: classify.train_classifier(model, tok, []), "empty"),
        ("predict_proba empty", lambda: classify.predict_proba(model, tok, []), "empty"),
        ("accuracy empty", lambda: classify.accuracy(model, tok, []), "empty"),
        ("perplexity empty", lambda: evaluate.perplexity(model, tok, []), "no texts"),
        ("generate empty", lambda: evaluate.generate(model, tok, []), "no prompts"),
        ("fact_recall empty", lambda: evaluate.fact_recall(model, tok, []), "no people"),
        ("continuation_logprobs mismatch", lambda: evaluate.continuation_logprobs(model, tok, ["a"], []), "1 prompts"),
        ("read_jsonl empty file", lambda: data.read_jsonl(_write(tmp_path / "e.jsonl", "")), "no rows"),
        ("read_jsonl missing file", lambda: data.read_jsonl(tmp_path / "nope.jsonl"), "not found"),
        ("read_jsonl missing field", lambda: data.read_jsonl(_write(tmp_path / "m.jsonl", '{"a": 1}\n'), ["b"]),
         "line 1"),
        ("load_sample unknown", lambda: data.load_sample("no_such.jsonl"), "not found"),
        ("load_sample unknown split", lambda: data.load_sample("reviews.jsonl", split="validation"), "split"),
        ("save_results empty", lambda: results.save_results("99_x", [], directory=tmp_path), "empty"),
        ("save_results table type", lambda: results.save_results("99_x", "acc=1", directory=tmp_path), "table"),
        ("save_results checks type", lambda: results.save_results("99_x", [{"a": 1}], checks=["ok"],
                                                                  directory=tmp_path), "checks"),
        ("load_results missing", lambda: results.load_results("99_never", directory=tmp_path), "run that lesson"),
        ("early_stopping_trace empty", lambda: overfitting.early_stopping_trace([], patience=2),
         "no validation losses"),
        ("early_stopping_trace patience", lambda: overfitting.early_stopping_trace([1.0, 0.9], patience=0),
         "patience"),
        ("curve_summary empty", lambda: overfitting.curve_summary([]), "curve"),
        ("upper_vs_lower empty", lambda: layers.upper_vs_lower([]), "upper_vs_lower"),
        ("value_at empty", lambda: forgetting.value_at([], "x", 0.5, "y"), "value_at"),
        ("detection_scores mismatch", lambda: quality.detection_scores([True], [True, False]), "equal"),
        ("positive_rate_gap mismatch", lambda: bias.positive_rate_gap(
            bias.counterfactual_rows(rows, "company", ["Kestrel", "Ashby"]), [0.5], "Kestrel"),
         "1 probabilities for 16 rows"),
        ("find_label_issues shape", lambda: quality.find_label_issues(rows, torch.zeros(3, 2).numpy()),
         "pred_probs"),
        ("linear_cka shapes", lambda: layers.linear_cka(torch.zeros(4, 3), torch.zeros(5, 3)), "linear_cka"),
        ("distillation_loss shapes", lambda: distill.distillation_loss(torch.zeros(1, 3, 8), torch.zeros(1, 3, 9)),
         "differ"),
        # wrong numbers where counts are expected
        ("augment copies", lambda: quality.augment(rows, copies=-1), "copies"),
        ("review_candidates budget", lambda: bias.review_candidates(rows, "company", budget=-2), "budget"),
        ("labelled_subset n", lambda: costs.labelled_subset(rows, n=0), "labelled_subset"),
        ("labelled_subset too many", lambda: costs.labelled_subset(rows, n=100), "labelled_subset"),
        ("bio_task sizes", lambda: overfitting.bio_task(w, n_train=-1), "bio_task"),
        ("bio_task too many", lambda: overfitting.bio_task(w, n_train=10_000), "bio_task"),
        ("mix_rehearsal epochs", lambda: forgetting.mix_rehearsal(["n"], ["o"], 0.1, epochs=0), "epochs"),
        ("ewc lambda", lambda: forgetting.ewc_penalty(model, {}, {}, ewc_lambda=-1.0), "lambda"),
        ("fisher mode", lambda: forgetting.fisher_diagonal(model, [{"input_ids": [1, 2, 3]}], mode="exact"), "mode"),
        ("fisher no examples", lambda: forgetting.fisher_diagonal(model, []), "no examples"),
        ("lora rank", lambda: peft_methods.lora_config("gpt2", r=0), "rank"),
        ("apply_method unknown", lambda: peft_methods.apply_method(model, "magic"), "method"),
        ("freeze too many layers", lambda: peft_methods.freeze_lower_layers(model, 99), "4 layers"),
        ("freeze negative layers", lambda: peft_methods.freeze_lower_layers(model, -1), "n_frozen"),
        ("shrink_model layers", lambda: distill.shrink_model(model, keep_layers=[0, 42]), "keep_layers"),
        ("resumable save_steps", lambda: train.resumable_training_args(config.CourseConfig(), tmp_path, save_steps=-5),
         "save_steps"),
        ("training_args unknown keyword", lambda: config.training_args(evaluation_strategy="steps"),
         "evaluation_strategy"),
        ("training_args learning rate", lambda: config.training_args(learning_rate=-1.0), "learning_rate"),
        ("classifier config epochs", lambda: classify.train_classifier(model, tok, rows,
                                                                       classify.ClassifierConfig(epochs=0)), "epochs"),
        ("classifier config lr", lambda: classify.train_classifier(
            model, tok, rows, classify.ClassifierConfig(learning_rate=-1e-3)), "learning_rate"),
        ("num_labels", lambda: classify.load_classifier("gpt2", num_labels=1), "num_labels"),
        ("setup seed type", lambda: profiles.setup(seed="zero", quiet=True), "seed"),
        ("setup gpu without gpu", lambda: profiles.setup("gpu", quiet=True), "gpu"),
        ("load_tokenizer missing", lambda: course_tokenizer.load_tokenizer(tmp_path / "no_tok"), "tokenizer.json"),
        ("train_tokenizer empty", lambda: course_tokenizer.train_tokenizer([]), "train_tokenizer"),
        ("load_local missing", lambda: zoo.load_local(tmp_path), "model.safetensors"),
        ("count_parameters not a model", lambda: zoo.count_parameters("gpt2"), "model"),
        ("describe not a model", lambda: zoo.describe(None), "model"),
        ("model_family not a model", lambda: peft_methods.model_family(object()), "model"),
        ("world config", lambda: world.make_world(world.WorldConfig(n_people=10, n_heldout=20)), "n_heldout"),
        ("biography not a person", lambda: world.biography({"name": "x"}, random.Random(0)), "person"),
        ("fact_recall not people", lambda: evaluate.fact_recall(model, tok, [{"name": "x"}]), "person"),
        ("run_dir bad lesson", lambda: train.run_dir(""), "lesson"),
        # a tokenizer that does not fit the model: ids beyond the model's vocabulary
        ("mismatch perplexity", lambda: evaluate.perplexity(small_vocab_model, tok, ["Cassia was born here."]),
         "vocabulary"),
        ("mismatch generate", lambda: evaluate.generate(small_vocab_model, tok, ["Cassia"], max_new_tokens=1),
         "vocabulary"),
        ("mismatch fact_recall", lambda: evaluate.fact_recall(small_vocab_model, tok, w.seen[:2]), "vocabulary"),
        ("mismatch continuation",
         lambda: evaluate.continuation_logprobs(small_vocab_model, tok, ["a"], [" b"]), "vocabulary"),
        ("mismatch predict_proba", lambda: classify.predict_proba(small_vocab_model, tok, rows), "vocabulary"),
        ("mismatch train_classifier",
         lambda: classify.train_classifier(small_vocab_model, tok, rows), "vocabulary"),
        ("mismatch hidden_states", lambda: layers.hidden_states(small_vocab_model, tok, ["a b"]), "vocabulary"),
    ]


def _write(path, text):
    path.write_text(text)
    return path


def test_each_case_gets_a_clear_one_line_error(tok, model, small_vocab_model, tmp_path):
    failures = []
    for name, thunk, match in cases(tok, model, small_vocab_model, tmp_path):
        try:
            clear_error(thunk, match=match)
        except AssertionError as err:
            failures.append(f"{name}: {str(err).splitlines()[0][:300]}")
    assert not failures, f"{len(failures)} unclear answers to bad input:\n" + "\n".join(failures)


def test_validation_leaves_valid_input_alone(tok, model):
    """The checks added at the top of helpers change nothing for good input: same numbers as the raw computation."""
    texts = ["Cassia Jessham was born in Quarrow.", "The lamp from Kestrel works well."]
    ids = [text.encode(tok, t, add_eos=True) for t in texts]
    model.eval()
    with torch.no_grad():
        nll = sum(torch.nn.functional.cross_entropy(model(torch.tensor([s])).logits[0, :-1], torch.tensor(s[1:]),
                                                    reduction="sum").item() for s in ids)
    assert evaluate.perplexity(model, tok, texts) == pytest.approx(math.exp(nll / sum(len(s) - 1 for s in ids)),
                                                                   rel=1e-5)
    rows = review_rows()
    flipped, record = noise.flip_labels(rows, 0.25, seed=1)
    assert sum(a["label"] != b["label"] for a, b in zip(rows, flipped)) == 2 == len(record.chosen)
    assert forgetting.rehearsal_count(95, 0.05) == 5


def test_zz_report_how_many_bad_inputs_were_tried():
    print(f"\nbad inputs tried: {INPUTS_TRIED['n']}")
    assert INPUTS_TRIED["n"] > 500
