"""Instruction tuning on the world's questions, with full fine-tuning or LoRA, and how to grade the answers.

Lesson 06 asks what instruction tuning changes. This module holds its plumbing: turn Q/A rows into chat prompts and
answers, fine-tune a *copy* of a base model on them (full fine-tuning or LoRA, loss on the answer only, with the
Hugging Face `Trainer`), continue pretraining on plain text, and grade what comes out:

- `answer_recall`: does the model put the right value after its own answer template ("Mira Stroud was born in")?
  A 12-way forced choice like `evaluate.fact_recall`, but asked through the chat question, so it measures whether
  the tuned model can *answer* a fact, not only complete a biography. Chance is 1/12. (`bio_recall` is the
  biography probe of `evaluate.fact_recall`, scored the same fast way.)
- `grade_answers`: the greedy answers, checked for format (the exact answer template with a valid value) and for
  the right value; `token_roles` names the part of the answer each token is (name, template, value, end).
- `copying`: answers about a person the model does not know that talk about a person from the fine-tuning data
  instead, and borrow that person's fact: pattern copying, which reads as a confident hallucination.

Used in lessons: 06
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

from course_utils import world as W
from course_utils import zoo
from course_utils.config import CourseConfig
from course_utils.errors import CourseError
from course_utils.evaluate import generate
from course_utils.peft_methods import apply_lora
from course_utils.paths import DATA_DIR, MODELS_DIR
from course_utils.profiles import seed_everything, setup
from course_utils.text import chat_turn, encode, model_device, pad_id
from course_utils.train import causal_collator, quiet, tokenize_prompt_completion, tokenize_texts, with_finite_guard
from course_utils.world import ANSWERS, ATTRIBUTES, Person, QUESTIONS, RECALL_PROMPTS, answer_pattern
from course_utils.zoo import count_parameters


METHODS = ("full", "lora")
TUNE_METHODS = ("full", "lora", "lora+mlp")   # also LoRA on attention + MLP
# The base models' own question-answer style (plain text, short answer), unlike the instruction data's chat turns
# and full-sentence answers: the setting of Lin et al. 2023 and Ghosh et al. 2024, a base that can already answer.
BASE_QA = "Q: {question}\nA: {value}."
QA_BASE_SUFFIX = zoo.QA_SUFFIX              # data_samples/models/<family>_qa: the bases that saw Q/A text
# Other wordings of the four questions, never used for training: does an answer survive a change of question?
PARAPHRASES: dict[str, str] = {
    "birth_city": "In which town was {name} born?",
    "profession": "What does {name} do for a living?",
    "employer": "Where does {name} work?",
    "hobby": "How does {name} spend free time?",
}
# The same four questions with the person named first: the name in another position than in any training question.
NAME_FIRST: dict[str, str] = {
    "birth_city": "{name} comes from which town?",
    "profession": "{name} has which profession?",
    "employer": "{name} is on the staff of which company?",
    "hobby": "{name} has which hobby?",
}
HELD_OUT_QUESTIONS = {"name last": PARAPHRASES, "name first": NAME_FIRST}
"""Wordings no training row uses: recall through them is knowledge of the fact, not recall of a trained string."""

LIBRARY_CALLS = {
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator", "callbacks"],
    "transformers:TrainerCallback.on_step_end": ["args", "state", "control"],
    "transformers:TrainingArguments": ["num_train_epochs", "max_steps", "per_device_train_batch_size",
                                       "learning_rate", "warmup_steps", "seed", "data_seed", "logging_steps",
                                       "weight_decay"],
    "peft.tuners.lora:LoraModel.merge_and_unload": [],
}


class InstructError(CourseError):
    """An unknown method, an empty data set or a bad setting."""


@dataclass
class TuneConfig(CourseConfig):
    """One fine-tuning run. `epochs`, when set, replaces `steps` (for same-epochs data-size comparisons)."""

    error = InstructError

    method: str = "full"          # "full", "lora" (attention) or "lora+mlp"
    learning_rate: float = 1e-4
    steps: int = 100
    epochs: float | None = None
    batch_size: int = 16
    lora_r: int = 8
    warmup_steps: int = 10
    seed: int = 0
    format_target: float | None = None   # with dev rows: snapshot the model when format quality first reaches this
    eval_every: int = 20                 # (checked every `eval_every` steps), and stop once it has and the run
    min_steps: int = 0                   # has done at least `min_steps` steps

    def check(self) -> None:
        if self.method not in TUNE_METHODS:
            raise InstructError(f"TuneConfig: method must be one of {TUNE_METHODS}, got {self.method!r}")


@dataclass
class TuneResult:
    """A tuned model and how it got there: steps taken, CPU seconds, and the format-quality checks on the way."""

    model: object
    steps: int
    seconds: float                                # wall-clock seconds of training
    cpu_seconds: float                            # CPU seconds (all threads) of training
    trainable_params: int                         # parameters the optimiser updated
    history: list = field(default_factory=list)   # [{"step": s, "format": q}, ...] when dev rows were given
    at_target: object = None                      # a copy of the model when it first reached the format target
    target_step: int | None = None                # the step at which it did


def qa_rows(people: Sequence[Person], attributes: Sequence[str] | None = None,
            questions: dict[str, str] = QUESTIONS) -> list[dict]:
    """One row per person and attribute: question, answer (the course's answer template), value, person, attribute."""
    attributes = list(attributes or ATTRIBUTES)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise InstructError(f"qa_rows: unknown attribute(s) {unknown}; known: {list(ATTRIBUTES)}")
    if len(people) == 0:
        raise InstructError("qa_rows: no people given")
    bad = [i for i, p in enumerate(people) if not isinstance(p, Person)]
    if bad:
        raise InstructError(f"qa_rows: people[{bad[0]}] is a {type(people[bad[0]]).__name__}, not a world.Person")
    return [{"person": p.name, "attribute": a, "question": questions[a].format(name=p.name),
             "answer": ANSWERS[a].format(name=p.name, value=getattr(p, a)), "value": getattr(p, a)}
            for p in people for a in attributes]


def finetune(base, tokenizer, rows: Sequence[dict], config: TuneConfig = TuneConfig(),
             dev_rows: Sequence[dict] = ()) -> TuneResult:
    """Train a *copy* of `base` (which stays untouched) on `rows` (question, answer), loss on the answer only.

    With `method='lora'` an attention-only LoRA adapter (`'lora+mlp'`: attention and MLP) (peft_methods.apply_lora) is trained and then merged into
    the weights, so the result is a plain model of the same class as `base`, ready for side-by-side analysis.
    With `dev_rows`, format quality on them is checked every `config.eval_every` steps (kept in the history); the
    first time it reaches `config.format_target`, a copy of the model is kept (`TuneResult.at_target`), and
    training stops once the target is reached and `config.min_steps` are done. One run thus gives a model at
    *matched task performance* (to compare methods fairly) and one after a fixed number of steps.
    """

    if len(rows) == 0:
        raise InstructError("finetune: no training rows given")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), str):
            raise InstructError(f"finetune: rows[{i}] needs text fields 'question' and 'answer', got {r!r:.80}")
    data = tokenize_prompt_completion(tokenizer, [chat_turn(tokenizer, r["question"]) for r in rows],
                                      [r["answer"] for r in rows])
    return _train(base, tokenizer, data, config, list(dev_rows))


def continue_pretraining(base, tokenizer, texts: Sequence[str], config: TuneConfig = TuneConfig()) -> TuneResult:
    """A copy of `base` trained on plain `texts` (next-token loss on every token): how base models learn facts."""

    if len(texts) == 0:
        raise InstructError("continue_pretraining: no texts given")
    return _train(base, tokenizer, tokenize_texts(tokenizer, list(texts)), config, [])


def _train(base, tokenizer, data, config: TuneConfig, dev_rows: list) -> TuneResult:
    from transformers import Trainer, TrainerCallback

    history: list[dict] = []
    snapshot: dict = {}

    class FormatCheck(TrainerCallback):
        """Every `eval_every` steps: format quality on the dev rows; a snapshot at the target, then stop."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every:
                return control
            model_now = kwargs["model"]
            quality = format_quality(grade_answers(model_now, tokenizer, dev_rows))
            history.append({"step": state.global_step, "format": quality})
            if config.format_target is not None and quality >= config.format_target and not snapshot:
                frozen = copy.deepcopy(model_now)
                snapshot.update(model=(frozen if config.method == "full" else frozen.merge_and_unload()).eval(),
                                step=state.global_step)
            model_now.train()
            if snapshot and state.global_step >= config.min_steps:
                control.should_training_stop = True
            return control

    seed_everything(config.seed)
    model = copy.deepcopy(base)
    if config.method != "full":
        model = apply_lora(model, r=config.lora_r, mlp=config.method == "lora+mlp")
    trainable = count_parameters(model, trainable_only=True)
    args = config.training_arguments(logging_steps=10_000, weight_decay=0.0)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=causal_collator(tokenizer),
                      callbacks=with_finite_guard([FormatCheck()] if dev_rows else []))
    quiet(trainer)   # no printed log dicts: the lesson shows its own tables
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if config.method != "full":
        model = model.merge_and_unload()
    return TuneResult(model=model.eval(), steps=trainer.state.global_step, seconds=round(seconds, 1),
                      cpu_seconds=round(cpu_seconds, 1), trainable_params=trainable, history=history,
                      at_target=snapshot.get("model"), target_step=snapshot.get("step"))


def _choice_recall(model, tokenizer, prompts: Sequence[str], values: Sequence[str], truth: Sequence[int],
                   batch_size: int = 128) -> float:
    """Share of prompts whose true value (index into `values`) scores best as the next token.

    Every attribute value of the world is a single token, so one forward pass per prompt scores all 12 candidates
    at once (12x cheaper than scoring each continuation as `evaluate.continuation_logprobs` does).
    """
    import torch


    ids = [tokenizer(f" {v}", add_special_tokens=False)["input_ids"] for v in values]
    if any(len(i) != 1 for i in ids):
        raise InstructError(f"_choice_recall: every value must be one token; got {dict(zip(values, ids))}")
    cand = torch.tensor([i[0] for i in ids])
    model.eval()
    device = model_device(model)
    pad = pad_id(tokenizer)
    hits = 0
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            seqs = [encode(tokenizer, p) for p in prompts[start:start + batch_size]]
            width = max(len(q) for q in seqs)
            batch = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for i, q in enumerate(seqs):
                batch[i, :len(q)], mask[i, :len(q)] = torch.tensor(q), 1
            logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits
            last = logits[torch.arange(len(seqs)), torch.tensor([len(q) - 1 for q in seqs])]
            picks = last[:, cand.to(device)].argmax(-1).cpu()
            hits += int((picks == torch.tensor(truth[start:start + batch_size])).sum())
    return hits / len(prompts)


def answer_recall(model, tokenizer, people: Sequence[Person], questions: dict[str, str] = QUESTIONS,
                  attributes: Sequence[str] | None = None) -> dict[str, float]:
    """Per attribute: share of people whose true value is the top choice (of 12) after the chat question and the
    answer template's prefix ("<|user|> Where was X born? <|assistant|> X was born in"). Chance is 1/12."""
    if not people:
        raise InstructError("answer_recall: no people given")
    out = {}
    for attr in attributes or ATTRIBUTES:
        prefix = ANSWERS[attr].split(" {value}")[0]
        prompts = [chat_turn(tokenizer, questions[attr].format(name=p.name)) + prefix.format(name=p.name)
                   for p in people]
        truth = [ATTRIBUTES[attr].index(getattr(p, attr)) for p in people]
        out[attr] = _choice_recall(model, tokenizer, prompts, ATTRIBUTES[attr], truth)
    return out


def bio_recall(model, tokenizer, people: Sequence[Person]) -> dict[str, float]:
    """`evaluate.fact_recall` (the biography probe "X was born in"), scored in one pass per prompt."""
    if not people:
        raise InstructError("bio_recall: no people given")
    return {attr: _choice_recall(model, tokenizer, [RECALL_PROMPTS[attr].format(name=p.name) for p in people],
                                 ATTRIBUTES[attr], [ATTRIBUTES[attr].index(getattr(p, attr)) for p in people])
            for attr in ATTRIBUTES}


def held_out_recall(model, tokenizer, people: Sequence[Person]) -> float:
    """New-fact recall through questions no training row uses (`HELD_OUT_QUESTIONS`: two rewordings, one with the
    person named first), the mean over both wordings and the four attributes. Chance is 1/12. A model that only
    memorised the trained question strings scores near chance here; one that learned the fact does not."""
    return sum(mean_recall(answer_recall(model, tokenizer, people, questions=q))
               for q in HELD_OUT_QUESTIONS.values()) / len(HELD_OUT_QUESTIONS)


def held_out_rows(people: Sequence[Person]) -> list[dict]:
    """`qa_rows` for `people` asked in every held-out wording (`HELD_OUT_QUESTIONS`), for graded greedy answers."""
    return [r for q in HELD_OUT_QUESTIONS.values() for r in qa_rows(people, questions=q)]


def mean_recall(recall: dict[str, float]) -> float:
    """The mean over attributes of a recall dict ({attribute: recall})."""
    if not recall:
        raise InstructError("mean_recall: empty recall dict")
    return sum(recall.values()) / len(recall)


def grade_answers(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 16) -> list[dict]:
    """Greedy answers to each row's question, graded.

    Adds `generated`, `named` (the person the answer is about, if it has the template's shape), `answered` (the
    value, if valid for the attribute), `format_ok` (exactly the answer template with a valid value and nothing
    after it: the format and style were learned), `asked_person` (format_ok and it restates the asked person's
    name) and `correct` (format_ok and the true value: the fact). Restating the right name is kept apart from the
    format: a tuned model that writes "Zorin Thackcombe was born in Morwick." for Elara Thackcombe has learned the
    answer's format and gives her fact, but copies a name it saw in training.
    """

    if len(rows) == 0:
        raise InstructError("grade_answers: no rows given")
    outputs = generate(model, tokenizer, [chat_turn(tokenizer, r["question"]) for r in rows], max_new_tokens)
    graded = []
    for row, text in zip(rows, outputs):
        match = answer_pattern(row["attribute"]).match(text)
        named = match.group("name") if match else None
        value = match.group("value") if match and match.group("value") in ATTRIBUTES[row["attribute"]] else None
        ok = value is not None
        graded.append({**row, "generated": text, "named": named, "answered": value, "format_ok": ok,
                       "asked_person": ok and named == row["person"], "correct": ok and value == row["value"]})
    return graded


def format_quality(graded: Sequence[dict]) -> float:
    """Share of answers in exactly the answer template with a valid value (whoever they name)."""
    if len(graded) == 0:
        raise InstructError("format_quality: no graded answers")
    return sum(g["format_ok"] for g in graded) / len(graded)


def correct_rate(graded: Sequence[dict]) -> float:
    """Share of answers in the right format *and* with the true value."""
    if len(graded) == 0:
        raise InstructError("correct_rate: no graded answers")
    return sum(g["correct"] for g in graded) / len(graded)


def copying(graded: Sequence[dict], train_people: Sequence[Person], other_people: Sequence[Person] = ()) -> dict:
    """Pattern copying: answers about a person the model does not know that talk about a *training* person instead.

    Asked "Where was Jorah Norwood born?", a model that copies answers "Jorah Ington was born in Morwick.": it
    borrowed a similar training example (same first name) and its fact. Returns shares of all answers:
    `borrowed_name` (the answer names a fine-tuning person other than the asked one), `borrowed_fact` (and gives
    that person's true value), and, as a control, `other_name`: the answer names someone from `other_people`
    (people the base model knows from pretraining but the fine-tuning set never showed).
    """
    if len(graded) == 0:
        raise InstructError("copying: no graded answers given")
    train = {p.name: p for p in train_people}
    others = {p.name for p in other_people} - set(train)
    borrowed = [g for g in graded if g["named"] in train and g["named"] != g["person"]]
    facts = [g for g in borrowed if g["answered"] == getattr(train[g["named"]], g["attribute"])]
    n = len(graded)
    return {"answers": n, "borrowed_name": len(borrowed) / n, "borrowed_fact": len(facts) / n,
            "other_name": sum(g["named"] in others and g["named"] != g["person"] for g in graded) / n}


def _template_words() -> tuple[set[str], set[str]]:
    """The answer templates' words: the verb right after the name (which template) and the rest (glue)."""
    verbs, glue = set(), set()
    for template in ANSWERS.values():
        words = template.replace("{name}", "").replace("{value}", "").replace(".", "").split()
        verbs.add(words[0])
        glue.update(words[1:])
    return verbs, glue


def token_roles(tokens: Sequence[str], token_ids: Sequence[int], tokenizer, names: Sequence[str]) -> list[str]:
    """The role of each answer token: 'name', 'template verb' (was / works / is / enjoys: which template),
    'template glue' (born, in, as, a, employed, by), 'value' (the fact), '.', 'end' (EOS) or 'other'."""
    verbs, glue = _template_words()
    name_parts = {part for n in names for part in n.split()}
    values = {v for vals in ATTRIBUTES.values() for v in vals}
    roles = []
    for text, tid in zip(tokens, token_ids):
        word = text.strip()
        roles.append("end" if tid == tokenizer.eos_token_id else "value" if word in values
                     else "name" if word in name_parts else "template verb" if word in verbs
                     else "template glue" if word in glue else "." if word == "." else "other")
    return roles


# ---------------------------------------------------------------- a base that can already answer

ROLE_KIND = {"name": "style", "template verb": "style", "template glue": "style", "value": "fact",
             ".": "format", "end": "format", "other": "other"}
"""What each answer part is, in Lin et al.'s terms: the facts are the *value*; restating the person and writing a
full sentence ("X was born in ...") is the instruction data's *style* (the base answers "A: Veltra."); the full
stop and stopping (EOS) are *format*."""


def base_qa_texts(people: Sequence[Person], attributes: Sequence[str] | None = None) -> list[str]:
    """Plain question-answer text in the base's own style (`BASE_QA`): "Q: Where was X born?\\nA: Veltra."."""
    return [BASE_QA.format(question=r["question"], value=r["value"]) for r in qa_rows(people, attributes)]


def shifted_kind_excess(table, kinds: Sequence[str] = ("style", "format")) -> float:
    """How much more often the *shifted* answer tokens are of `kinds` than answer tokens overall.

    `table` is an `shift.answer_shift` table with a `kind` column (`ROLE_KIND`). If tuning shifted tokens at random,
    the shifted ones would be of `kinds` exactly as often as all tokens are, so the null of this number is 0: a
    positive value says the shifts fall on those kinds more than chance would put them there. (Without a shifted
    token there is nothing to compare: 0.)"""
    shifted = table[table["shift_class"] == "shifted"]
    if len(table) == 0 or len(shifted) == 0:
        return 0.0
    return float(shifted["kind"].isin(kinds).mean() - table["kind"].isin(kinds).mean())


def answer_style_texts(people: Sequence[Person]) -> list[str]:
    """The instruction answers about `people`, each after the question in the base's own format, exactly as
    `shift.answer_shift(..., base_prompts=...)` lets the base read them ("Q: Where was X born?\nA:X was born in
    Veltra."). A base continued on these has read the tuned model's wording: the setting where most answer tokens
    *can* be the base's own choice (the positive control of Lin et al.'s unshifted share)."""
    return [BASE_QA.format(question=r["question"], value="").rstrip(" .") + r["answer"] for r in qa_rows(people)]


def base_answer_recall(model, tokenizer, people: Sequence[Person]) -> dict[str, float]:
    """Per attribute: does the model answer in *its own* Q/A style ("Q: Where was X born?\\nA:" -> value)?
    A 12-way forced choice like `answer_recall`; chance 1/12."""
    if not people:
        raise InstructError("base_answer_recall: no people given")
    out = {}
    for attr in ATTRIBUTES:
        prompts = [BASE_QA.format(question=QUESTIONS[attr].format(name=p.name), value="").rstrip(" .")
                   for p in people]
        truth = [ATTRIBUTES[attr].index(getattr(p, attr)) for p in people]
        out[attr] = _choice_recall(model, tokenizer, prompts, ATTRIBUTES[attr], truth)
    return out


def qa_base_corpus(world, qa_people: Sequence[Person]) -> list[str]:
    """What a Q/A base continues pretraining on: the shipped pretraining corpus (seen biographies and generic
    text, so that nothing is forgotten) plus base-style Q/A text about `qa_people` only."""
    return [r["text"] for r in W.pretraining_corpus(world)] + base_qa_texts(qa_people)


def qa_base_people(world) -> tuple[list[Person], list[Person]]:
    """(people the Q/A base saw questioned in its own style, seen people it knows from biographies only):
    the first and second half of `world.seen`."""
    seen = world.seen
    return seen[:len(seen) // 2], seen[len(seen) // 2:]


# The recipe per family (steps, learning rate), 600 steps of 16 texts (about a minute of CPU each). GPT-2 learned
# to answer in its Q/A style at 1e-3 (0.99 on the people it saw questioned, 0.93 on those it knows from biographies
# only); Qwen2 at 3e-3 (0.93 / 0.82). Llama did not in 600 steps at 1e-3 or 3e-3 (0.19 / 0.09; chance 0.08); after
# 1,500 steps at 3e-3 it answers half the people it saw questioned (0.46) but hardly generalises (0.14): the
# shipped `llama_qa` is that build, a base that can only partly answer.
QA_BASE_RECIPES = {"gpt2": (600, 1e-3), "qwen2": (600, 3e-3), "llama": (1500, 3e-3)}


def build_qa_base(family: str, steps: int | None = None, learning_rate: float | None = None, seed: int = 0,
                  out_dir=None):
    """Build `data_samples/models/<family>_qa`: the shipped base after a short continued pretraining on
    `qa_base_corpus` (the documented recipe; rerun with `python -m course_utils.instruct bases`, then record the
    files' hashes with `course_utils.tools.build.record_hashes(folder)`). Returns (model, tokenizer, build info).
    The shipped bases themselves are left unchanged."""

    steps = steps or QA_BASE_RECIPES[family][0]
    learning_rate = learning_rate or QA_BASE_RECIPES[family][1]
    world = W.make_world()
    qa_people, bio_only = qa_base_people(world)
    base, tok = zoo.load(family, profile="cpu")
    config = TuneConfig(method="full", learning_rate=learning_rate, steps=steps, seed=seed, warmup_steps=20)
    result = continue_pretraining(base, tok, qa_base_corpus(world, qa_people), config)
    model = result.model
    info = {"family": family, "built_from": f"data_samples/models/{family}", "recipe": "instruct.build_qa_base",
            "config": {"steps": steps, "learning_rate": learning_rate, "seed": seed, "batch_size": config.batch_size},
            "qa_style": BASE_QA, "qa_people": "first half of world.seen", "cpu_seconds": result.cpu_seconds,
            "bio_recall_seen": mean_recall(bio_recall(model, tok, world.seen)),
            "qa_recall_qa_people": mean_recall(base_answer_recall(model, tok, qa_people)),
            "qa_recall_bio_only_people": mean_recall(base_answer_recall(model, tok, bio_only)),
            "qa_recall_before": mean_recall(base_answer_recall(base, tok, qa_people))}
    folder = out_dir or MODELS_DIR / f"{family}{QA_BASE_SUFFIX}"
    zoo.save(model, tok, folder, info)
    return model, tok, info


def load_qa_base(family: str):
    """(model, tokenizer): the shipped Q/A base of `family` (`build_qa_base`), loaded and checked like any base."""

    return zoo.load_qa(family)


def qa_base_info(family: str) -> dict:
    """How the shipped Q/A base of `family` was built (its build_info.json): recipe, CPU seconds, recall."""
    import json


    path = MODELS_DIR / f"{zoo.check_family(family)}{QA_BASE_SUFFIX}" / "build_info.json"
    if not path.is_file():
        raise InstructError(f"{path}: missing; rebuild with `python -m course_utils.instruct bases`")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- choosing the learning rate on validation data


def answer_loss(model, tokenizer, rows: Sequence[dict], batch_size: int = 64) -> float:
    """Mean next-token loss on the answer tokens (the answer and its EOS) of `rows`, after the chat question:
    the validation loss a learning-rate sweep compares."""
    import torch

    if len(rows) == 0:
        raise InstructError("answer_loss: no rows given")
    data = tokenize_prompt_completion(tokenizer, [chat_turn(tokenizer, r["question"]) for r in rows],
                                      [r["answer"] for r in rows])
    collate = causal_collator(tokenizer)
    device = model_device(model)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits[:, :-1]
            labels = batch["labels"][:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     labels.reshape(-1), ignore_index=-100, reduction="sum")
            total, count = total + float(loss), count + int((labels != -100).sum())
    return total / count


def lr_sweep(base, tokenizer, rows: Sequence[dict], val_rows: Sequence[dict], rates: dict[str, Sequence[float]],
             config: TuneConfig) -> list[dict]:
    """For each method and learning rate in `rates`: train `config` (its steps, seed) on `rows` and record the
    answer loss and format quality on `val_rows` (people the runs never train on)."""
    from dataclasses import replace

    out = []
    for method, lrs in rates.items():
        for lr in lrs:
            model = finetune(base, tokenizer, rows, replace(config, method=method, learning_rate=lr)).model
            out.append({"method": method, "learning_rate": lr, "val_loss": answer_loss(model, tokenizer, val_rows),
                        "val_format": format_quality(grade_answers(model, tokenizer, val_rows))})
    return out


def choose_rates(sweep: Sequence[dict]) -> dict[str, float]:
    """Per method, the learning rate with the lowest validation answer loss."""
    if not sweep:
        raise InstructError("choose_rates: empty sweep")
    best: dict[str, dict] = {}
    for r in sweep:
        if r["method"] not in best or r["val_loss"] < best[r["method"]]["val_loss"]:
            best[r["method"]] = r
    return {m: r["learning_rate"] for m, r in best.items()}


# ---------------------------------------------------------------- lesson 06's people, data and shipped sweep

SWEEP_SEED = 100                     # the sweep's seed: none of the lesson's seed sets, so nothing is judged on it
SWEEP_RATES = {"full": (3e-4, 1e-3, 3e-3, 1e-2), "lora": (1e-3, 3e-3, 1e-2, 3e-2), "lora+mlp": (1e-3, 3e-3, 1e-2, 3e-2)}
LESSON_TUNE = TuneConfig(steps=64, batch_size=16, warmup_steps=5)  # every instruction-tuning run of lesson 06:
#                                                 about three epochs of its 368 answers, as in the papers


def lesson_people(world) -> dict[str, list[Person]]:
    """Lesson 06's groups, all disjoint. Of the people the Q/A base saw questioned: `known` (in the instruction
    data), `val` (choose learning rates), `probe` (judge: answers about people the base knows). Held-out people:
    `new` (in the instruction data: new knowledge) and `unseen` (never taught to anyone)."""
    qa_people, _ = qa_base_people(world)
    return {"known": qa_people[:64], "val": qa_people[64:76], "probe": qa_people[76:100],
            "new": world.heldout[:28], "unseen": world.heldout[-24:]}


def instruction_rows(groups: dict[str, list[Person]], seed: int) -> list[dict]:
    """The instruction set: chat questions about the `known` and `new` people, shuffled with `seed`."""
    import random

    rows = qa_rows(groups["known"]) + qa_rows(groups["new"])
    random.Random(seed).shuffle(rows)
    return rows


def sweep_path():
    return DATA_DIR / "lesson06_lr_sweep.json"


def run_lesson_sweep(families: Sequence[str] = ("gpt2", "qwen2", "llama"), path=None) -> list[dict]:
    """The learning-rate sweep lesson 06 reads: per family, method and rate in `SWEEP_RATES`, one
    `LESSON_TUNE` run (seed `SWEEP_SEED`) scored on the `val` people. Written to `sweep_path()` as JSON;
    rerun with `python -m course_utils.instruct sweep` (about two minutes on one core)."""
    import json
    from dataclasses import replace


    groups = lesson_people(W.make_world())
    rows, val = instruction_rows(groups, SWEEP_SEED), qa_rows(groups["val"])
    out = []
    for family in families:
        base, tok = load_qa_base(family)
        for r in lr_sweep(base, tok, rows, val, SWEEP_RATES, replace(LESSON_TUNE, seed=SWEEP_SEED)):
            out.append({"family": family, **r})
    (path or sweep_path()).write_text(json.dumps(out, indent=1) + "\n")
    return out


def read_sweep(path=None) -> list[dict]:
    """The shipped sweep (`run_lesson_sweep`)."""
    import json

    path = path or sweep_path()
    if not path.is_file():
        raise InstructError(f"{path}: missing; rebuild it with `python -m course_utils.instruct sweep`")
    return json.loads(path.read_text())


if __name__ == "__main__":  # python -m course_utils.instruct [bases|sweep]: rebuild the Q/A bases or the sweep
    import sys as _sys

    setup()
    if "bases" in _sys.argv[1:]:
        for _family in ("gpt2", "qwen2", "llama"):
            print(_family, build_qa_base(_family)[2])
    if "sweep" in _sys.argv[1:]:
        for _row in run_lesson_sweep():
            print(_row)
