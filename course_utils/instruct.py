"""Instruction tuning on the world's questions, with full fine-tuning or LoRA, and how to grade the answers.

Lesson 06 asks what instruction tuning changes. This module holds its plumbing: turn Q/A rows into chat prompts and
answers, fine-tune a *copy* of a base model on them (full fine-tuning or LoRA, loss on the answer only, with the
Hugging Face `Trainer`), continue pretraining on plain text, and grade what comes out:

- `answer_recall`: does the model put the right value after its own answer template ("Mira Stroud was born in")?
  A 12-way forced choice like `evaluate.fact_recall`, but asked through the chat question, so it measures whether
  the tuned model can *answer* a fact, not only complete a biography. Chance is 1/12.
- `grade_answers`: the greedy answers, checked for format (the exact answer template with a valid value) and for
  the right value.
- `copying`: answers about a person the model never saw that reuse the value of a *similar* person from the
  fine-tuning data (one who shares a first or last name): pattern copying, compared with a shuffled baseline.
"""

from __future__ import annotations

import copy
import random
import re
import time
from dataclasses import dataclass, field
from typing import Sequence

from course_utils.errors import CourseError
from course_utils.world import ANSWERS, ATTRIBUTES, QUESTIONS, Person

METHODS = ("full", "lora")
# Other wordings of the four questions, never used for training: does an answer survive a change of question?
PARAPHRASES: dict[str, str] = {
    "birth_city": "In which town was {name} born?",
    "profession": "What does {name} do for a living?",
    "employer": "Where does {name} work?",
    "hobby": "How does {name} spend free time?",
}

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
class TuneConfig:
    """One fine-tuning run. `epochs`, when set, replaces `max_steps` (for same-epochs data-size comparisons)."""

    method: str = "full"          # "full" or "lora"
    learning_rate: float = 1e-4
    max_steps: int = 100
    epochs: float | None = None
    batch_size: int = 16
    lora_r: int = 8
    warmup_steps: int = 10
    seed: int = 0
    format_target: float | None = None   # stop once format quality on `dev_rows` reaches this (checked every
    eval_every: int = 20                 # `eval_every` steps): "trained to the same format quality"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InstructError(f"TuneConfig: method must be one of {METHODS}, got {self.method!r}")
        if not self.learning_rate > 0:
            raise InstructError(f"TuneConfig: learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs is None and self.max_steps < 1:
            raise InstructError(f"TuneConfig: max_steps must be >= 1, got {self.max_steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise InstructError(f"TuneConfig: epochs must be > 0, got {self.epochs}")
        if self.format_target is not None and not 0 <= self.format_target <= 1:
            raise InstructError(f"TuneConfig: format_target must be in [0, 1], got {self.format_target}")


@dataclass
class TuneResult:
    """A tuned model and how it got there: steps taken, CPU seconds, and the format-quality checks on the way."""

    model: object
    steps: int
    seconds: float                                # wall-clock seconds of training
    cpu_seconds: float                            # CPU seconds (all threads) of training
    history: list = field(default_factory=list)   # [{"step": s, "format": q}, ...] when dev rows were given


def chat_prompt(tokenizer, question: str) -> str:
    """A question as the user turn of the chat template, with the assistant turn opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


def qa_rows(people: Sequence[Person], attributes: Sequence[str] | None = None,
            questions: dict[str, str] = QUESTIONS) -> list[dict]:
    """One row per person and attribute: question, answer (the course's answer template), value, person, attribute."""
    attributes = list(attributes or ATTRIBUTES)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise InstructError(f"qa_rows: unknown attribute(s) {unknown}; known: {list(ATTRIBUTES)}")
    return [{"person": p.name, "attribute": a, "question": questions[a].format(name=p.name),
             "answer": ANSWERS[a].format(name=p.name, value=getattr(p, a)), "value": getattr(p, a)}
            for p in people for a in attributes]


def finetune(base, tokenizer, rows: Sequence[dict], config: TuneConfig = TuneConfig(),
             dev_rows: Sequence[dict] = ()) -> TuneResult:
    """Train a *copy* of `base` (which stays untouched) on `rows` (question, answer), loss on the answer only.

    With `method='lora'` an attention-only LoRA adapter (peft_methods.apply_lora) is trained and then merged into
    the weights, so the result is a plain model of the same class as `base`, ready for side-by-side analysis.
    With `dev_rows`, format quality on them is checked every `config.eval_every` steps (kept in the history) and
    training stops once it reaches `config.format_target`: this is how two methods are compared at *matched*
    task performance rather than at matched steps.
    """
    from course_utils.train import tokenize_prompt_completion

    if len(rows) == 0:
        raise InstructError("finetune: no training rows given")
    data = tokenize_prompt_completion(tokenizer, [chat_prompt(tokenizer, r["question"]) for r in rows],
                                      [r["answer"] for r in rows])
    return _train(base, tokenizer, data, config, list(dev_rows))


def continue_pretraining(base, tokenizer, texts: Sequence[str], config: TuneConfig = TuneConfig()) -> TuneResult:
    """A copy of `base` trained on plain `texts` (next-token loss on every token): how base models learn facts."""
    from course_utils.train import tokenize_texts

    if len(texts) == 0:
        raise InstructError("continue_pretraining: no texts given")
    return _train(base, tokenizer, tokenize_texts(tokenizer, list(texts)), config, [])


def _train(base, tokenizer, data, config: TuneConfig, dev_rows: list) -> TuneResult:
    from transformers import Trainer, TrainerCallback

    from course_utils.peft_methods import apply_lora
    from course_utils.profiles import seed_everything
    from course_utils.train import causal_collator, training_args

    history: list[dict] = []

    class FormatCheck(TrainerCallback):
        """Every `eval_every` steps: format quality on the dev rows; stop at the target."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every:
                return control
            quality = format_quality(grade_answers(kwargs["model"], tokenizer, dev_rows))
            history.append({"step": state.global_step, "format": quality})
            kwargs["model"].train()
            if config.format_target is not None and quality >= config.format_target:
                control.should_training_stop = True
            return control

    seed_everything(config.seed)
    model = copy.deepcopy(base)
    if config.method == "lora":
        model = apply_lora(model, r=config.lora_r)
    steps = dict(num_train_epochs=config.epochs, max_steps=-1) if config.epochs else dict(max_steps=config.max_steps)
    args = training_args(per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                         warmup_steps=config.warmup_steps, seed=config.seed, data_seed=config.seed,
                         logging_steps=10_000, weight_decay=0.0, **steps)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=causal_collator(tokenizer),
                      callbacks=[FormatCheck()] if dev_rows else [])
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if config.method == "lora":
        model = model.merge_and_unload()
    return TuneResult(model=model.eval(), steps=trainer.state.global_step, seconds=round(seconds, 1),
                      cpu_seconds=round(cpu_seconds, 1), history=history)


def answer_recall(model, tokenizer, people: Sequence[Person], questions: dict[str, str] = QUESTIONS,
                  attributes: Sequence[str] | None = None) -> dict[str, float]:
    """Per attribute: share of people whose true value is the top choice after the chat question and the answer
    template's prefix ("<|user|> Where was X born? <|assistant|> X was born in" -> 12 candidate values)."""
    import torch

    from course_utils.evaluate import continuation_logprobs

    if not people:
        raise InstructError("answer_recall: no people given")
    out = {}
    for attr in attributes or ATTRIBUTES:
        values = ATTRIBUTES[attr]
        prefix = ANSWERS[attr].split(" {value}")[0]
        prompts = [chat_prompt(tokenizer, questions[attr].format(name=p.name)) + prefix.format(name=p.name)
                   for p in people for _ in values]
        scores = torch.tensor(continuation_logprobs(model, tokenizer, prompts, [f" {v}" for _ in people for v in values]))
        picks = scores.view(len(people), len(values)).argmax(-1)
        truth = torch.tensor([values.index(getattr(p, attr)) for p in people])
        out[attr] = (picks == truth).float().mean().item()
    return out


def mean_recall(recall: dict[str, float]) -> float:
    return sum(recall.values()) / len(recall)


def _answer_pattern(attr: str, name: str) -> re.Pattern:
    template = re.escape(ANSWERS[attr]).replace(re.escape("{name}"), re.escape(name))
    return re.compile("^" + template.replace(re.escape("{value}"), r"(\w+)") + "$")


def grade_answers(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 16) -> list[dict]:
    """Greedy answers to each row's question, with `format_ok` (exactly the answer template, a valid value of the
    right attribute, nothing after it), the `answered` value (or None) and `correct`."""
    from course_utils.evaluate import generate

    if len(rows) == 0:
        raise InstructError("grade_answers: no rows given")
    outputs = generate(model, tokenizer, [chat_prompt(tokenizer, r["question"]) for r in rows], max_new_tokens)
    graded = []
    for row, text in zip(rows, outputs):
        match = _answer_pattern(row["attribute"], row["person"]).match(text)
        value = match.group(1) if match and match.group(1) in ATTRIBUTES[row["attribute"]] else None
        graded.append({**row, "generated": text, "answered": value, "format_ok": value is not None,
                       "correct": value == row["value"]})
    return graded


def format_quality(graded: Sequence[dict]) -> float:
    """Share of answers in exactly the answer template with a valid value (right or wrong)."""
    return sum(g["format_ok"] for g in graded) / len(graded)


def similar_people(person: str, train_people: Sequence[Person]) -> list[Person]:
    """Training people who share a first or a last name with `person` (and are not that person)."""
    first, last = person.split(" ", 1)
    return [p for p in train_people if p.name != person and (p.name.split(" ", 1)[0] == first
                                                             or p.name.split(" ", 1)[1] == last)]


def copying(graded: Sequence[dict], train_people: Sequence[Person], n_shuffles: int = 200,
            seed: int = 0) -> dict[str, float]:
    """Pattern copying: how often a wrong answer reuses the value that a *similar* training person has.

    `rate`: share of well-formed, wrong answers whose value equals the attribute value of a training person who
    shares a first or last name with the asked person. `baseline`: the same share after shuffling the answered
    values among the asked people of each attribute (what name-blind guessing with the same value frequencies
    would score). `excess` = rate - baseline: above 0 means the name pulled the answer towards a similar example.
    """
    wrong = [g for g in graded if g["format_ok"] and not g["correct"]]
    if not wrong:
        return {"answers": 0, "rate": 0.0, "baseline": 0.0, "excess": 0.0}
    pools = [{getattr(p, g["attribute"]) for p in similar_people(g["person"], train_people)} for g in wrong]

    def rate(values: Sequence[str]) -> float:
        return sum(v in pool for v, pool in zip(values, pools)) / len(wrong)

    observed = rate([g["answered"] for g in wrong])
    rng = random.Random(seed)
    shuffled = []
    for _ in range(n_shuffles):
        values = [g["answered"] for g in wrong]
        for attr in ATTRIBUTES:
            idx = [i for i, g in enumerate(wrong) if g["attribute"] == attr]
            perm = [values[i] for i in idx]
            rng.shuffle(perm)
            for i, v in zip(idx, perm):
                values[i] = v
        shuffled.append(rate(values))
    baseline = sum(shuffled) / len(shuffled)
    return {"answers": len(wrong), "rate": observed, "baseline": baseline, "excess": observed - baseline}
