"""course_utils.instruct: lesson 06's instruction tuning (full or LoRA), grading and pattern-copying helpers."""

import pytest
import torch

from course_utils import instruct as I
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
    for method in I.METHODS:
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
    pattern = I._answer_pattern("birth_city")
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
