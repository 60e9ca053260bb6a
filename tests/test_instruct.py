"""course_utils.instruct: lesson 06's instruction tuning (full or LoRA), grading and pattern-copying helpers."""

import pytest
import torch

from course_utils import instruct as I
from course_utils import world as W
from course_utils import zoo
from course_utils.world import ANSWERS, Person

SMALL = zoo.TinySpec(hidden=32, layers=2, heads=2, intermediate=64, max_positions=128)


@pytest.fixture(scope="module")
def base(tokenizer):
    return zoo.build_model("gpt2", tokenizer, SMALL, seed=0)



def _people():
    return [Person("Mira Stroud", "Veltra", "baker", "Zentrix", "chess"),
            Person("Mira Crane", "Ashdale", "pilot", "Kestrel", "rowing"),
            Person("Bram Stroud", "Corrin", "sailor", "Lumora", "origami"),
            Person("Orla Vance", "Garrow", "farmer", "Halcyon", "fencing")]


def test_finetune_returns_a_plain_tuned_copy_and_leaves_the_base_alone(base, tokenizer):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    rows = I.qa_rows(_people()[:2], ["birth_city"])
    for method in I.TUNE_METHODS:
        result = I.finetune(base, tokenizer, rows, I.TuneConfig(method=method, steps=2, batch_size=2,
                                                                 learning_rate=1e-2, warmup_steps=0,
                                                                 eval_every=1, format_target=0.0), dev_rows=rows)
        tuned = result.model
        assert type(tuned) is type(base)
        assert result.steps == 1 and result.history == [{"step": 1, "format": result.history[0]["format"]}]
        assert result.target_step == 1 and type(result.at_target) is type(base)
        assert not any("lora" in n for n, _ in tuned.named_parameters())
        assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_grading_and_copying_on_hand_built_answers(base, tokenizer):
    people = _people()
    rows = I.qa_rows(people[:1], ["birth_city"])
    assert rows[0]["question"] == "Where was Mira Stroud born?" and rows[0]["answer"].endswith("Veltra.")
    pattern = W.answer_pattern("birth_city")
    assert pattern.match("Mira Stroud was born in Ashdale.").group("name", "value") == ("Mira Stroud", "Ashdale")
    assert not pattern.match("Mira Stroud was born in Ashdale. And more")
    # asked about an unknown Mira Stroud, a model that answers about Mira Crane (a training person) copies
    asked = {"person": "Mira Stroud", "attribute": "birth_city", "value": "Veltra"}
    graded = [{**asked, "named": "Mira Crane", "answered": "Ashdale"},   # borrowed name and fact
              {**asked, "named": "Mira Crane", "answered": "Corrin"},    # borrowed name only
              {**asked, "named": "Orla Vance", "answered": "Garrow"},    # a person the tuning never showed
              {**asked, "named": "Mira Stroud", "answered": "Veltra"}]
    out = I.copying(graded, train_people=people[1:3], other_people=people[3:])
    assert out == {"answers": 4, "borrowed_name": 0.5, "borrowed_fact": 0.25, "other_name": 0.25}
    with pytest.raises(I.InstructError, match="method must be one of"):
        I.TuneConfig(method="qlora")
    with pytest.raises(I.InstructError, match="unknown attribute"):
        I.qa_rows(people, ["shoe_size"])
    with pytest.raises(I.InstructError, match="no training rows"):
        I.finetune(base, tokenizer, [])
    with pytest.raises(I.InstructError, match="no graded answers"):
        I.copying([], people)


def test_token_roles_name_each_part_of_an_answer(tokenizer):
    answer = ANSWERS["birth_city"].format(name="Mira Stroud", value="Veltra")
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    tokens = [tokenizer.decode([i]) for i in ids]
    roles = I.token_roles(tokens, ids, tokenizer, ["Mira Stroud"])
    assert roles[-1] == "end" and roles[-2] == "."
    assert set(roles) >= {"name", "template verb", "template glue", "value"}
    assert [t.strip() for t, r in zip(tokens, roles) if r == "value"] == ["Veltra"]


def test_recall_probes_and_config_checks(base, tokenizer):
    people = _people()
    recall = I.answer_recall(base, tokenizer, people)
    assert set(recall) == set(I.PARAPHRASES) and all(0 <= v <= 1 for v in recall.values())
    assert 0 <= I.mean_recall(I.bio_recall(base, tokenizer, people)) <= 1
    with pytest.raises(I.InstructError, match="no people"):
        I.answer_recall(base, tokenizer, [])
    with pytest.raises(I.InstructError, match="learning_rate"):
        I.TuneConfig(learning_rate=0)
    with pytest.raises(I.InstructError, match="format_target"):
        I.TuneConfig(format_target=1.5)


def test_bad_inputs_get_one_line_errors():
    import pytest as _pytest

    from course_utils import instruct as I
    from course_utils import world as W

    with _pytest.raises(I.InstructError, match="no people"):
        I.qa_rows([])
    with _pytest.raises(I.InstructError, match="not a world.Person"):
        I.qa_rows([{"name": "x"}])
    with _pytest.raises(I.InstructError, match="question"):
        I.finetune(None, None, [{"q": "x"}])
    with _pytest.raises(I.InstructError, match="empty"):
        I.mean_recall({})
    with _pytest.raises(I.InstructError, match="no graded"):
        I.format_quality([])
    assert I.qa_rows(W.make_world().seen[:1])[0]["person"]


def test_base_style_qa_text_and_its_probe(base, tokenizer):
    people = _people()
    texts = I.base_qa_texts(people[:1], ["birth_city"])
    assert texts == ["Q: Where was Mira Stroud born?\nA: Veltra."]
    recall = I.base_answer_recall(base, tokenizer, people)
    assert set(recall) == set(I.PARAPHRASES) and all(0 <= v <= 1 for v in recall.values())
    assert set(I.ROLE_KIND.values()) == {"style", "fact", "format", "other"}
    with pytest.raises(I.InstructError, match="no people"):
        I.base_answer_recall(base, tokenizer, [])


def test_lesson_people_are_disjoint_and_the_qa_bases_are_shipped():
    from course_utils import world as W

    world = W.make_world()
    groups = I.lesson_people(world)
    names = [p.name for g in groups.values() for p in g]
    assert len(names) == len(set(names))
    qa_people, bio_only = I.qa_base_people(world)
    assert {p.name for p in groups["probe"]} <= {p.name for p in qa_people}
    assert not {p.name for p in groups["new"] + groups["unseen"]} & {p.name for p in world.seen}
    rows = I.instruction_rows(groups, 0)
    assert len(rows) == 4 * (len(groups["known"]) + len(groups["new"])) and rows != I.instruction_rows(groups, 1)
    from course_utils.paths import MODELS_DIR
    from course_utils.tools.build import hash_problems

    for family in ("gpt2", "qwen2", "llama"):
        folder = MODELS_DIR / f"{family}{I.QA_BASE_SUFFIX}"
        zoo.check_folder(folder, family)  # the zoo's integrity checks: safetensors, shapes match the config
        assert not list(folder.glob("*.bin"))
        assert hash_problems(folder) == []  # every shipped file matches the sha256 its build_info.json records
        model, _ = I.load_qa_base(family)
        shipped, _ = zoo.load(family, profile="cpu")
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in shipped.state_dict().items()}
        assert I.qa_base_info(family)["recipe"] == "instruct.build_qa_base"
    if I.sweep_path().is_file():  # the shipped sweep, once built (`python -m course_utils.instruct sweep`)
        sweep = I.read_sweep()
        assert {r["family"] for r in sweep} == {"gpt2", "qwen2", "llama"}
        assert {r["method"] for r in sweep} == set(I.TUNE_METHODS)


def test_answer_loss_sweep_and_rate_choice(base, tokenizer):
    rows = I.qa_rows(_people()[:2], ["birth_city"])
    loss = I.answer_loss(base, tokenizer, rows)
    assert loss > 0
    sweep = I.lr_sweep(base, tokenizer, rows, rows, {"full": (1e-3, 1e-2)},
                       I.TuneConfig(steps=2, batch_size=2, warmup_steps=0))
    assert [r["learning_rate"] for r in sweep] == [1e-3, 1e-2] and all(r["val_loss"] > 0 for r in sweep)
    best = min(sweep, key=lambda r: r["val_loss"])["learning_rate"]
    assert I.choose_rates(sweep) == {"full": best}
    with pytest.raises(I.InstructError, match="empty sweep"):
        I.choose_rates([])
    with pytest.raises(I.InstructError, match="no rows"):
        I.answer_loss(base, tokenizer, [])
    with pytest.raises(I.InstructError, match="missing"):
        I.read_sweep(I.sweep_path().with_name("no_such_sweep.json"))


def test_grading_keeps_the_format_apart_from_restating_the_right_name(monkeypatch, tokenizer):
    # A tuned model that writes another person's name in the right template has learned the format and may still
    # give the asked person's fact: format_ok and correct, but not asked_person.
    row = I.qa_rows(_people()[:1], ["birth_city"])[0]
    answers = ["Zorin Qx was born in Veltra.", row["answer"], "Mira Stroud was born in Corrin.",
               "Mira Stroud was born in Veltra. And more", "Veltra."]
    monkeypatch.setattr(I, "generate", lambda model, tok, prompts, n: answers[:len(prompts)])
    graded = I.grade_answers(None, tokenizer, [row] * len(answers))
    assert [g["format_ok"] for g in graded] == [True, True, True, False, False]
    assert [g["asked_person"] for g in graded] == [False, True, True, False, False]
    assert [g["correct"] for g in graded] == [True, True, False, False, False]
    assert I.format_quality(graded) == 0.6 and I.correct_rate(graded) == 0.4


def test_held_out_wordings_and_the_shift_null():
    import pandas as pd

    world = W.make_world()
    people = world.heldout[:2]
    trained = {r["question"] for r in I.qa_rows(people)}
    held = I.held_out_rows(people)
    assert len(held) == 2 * len(I.qa_rows(people)) and not trained & {r["question"] for r in held}
    assert all(r["question"].startswith(r["person"]) for r in I.qa_rows(people, questions=I.NAME_FIRST))
    texts = I.answer_style_texts(people[:1])
    assert texts[0].startswith("Q: ") and "\nA:" + people[0].name in texts[0] and texts[0].endswith(".")
    # Shifts spread at random over the kinds: excess 0; shifts only on style: excess = the share of other kinds.
    table = pd.DataFrame({"kind": ["style", "fact", "style", "fact"],
                          "shift_class": ["shifted", "shifted", "unshifted", "unshifted"]})
    assert I.shifted_kind_excess(table) == 0.0
    table["shift_class"] = ["shifted", "unshifted", "shifted", "unshifted"]
    assert I.shifted_kind_excess(table) == 0.5
    table["shift_class"] = "unshifted"
    assert I.shifted_kind_excess(table) == 0.0
