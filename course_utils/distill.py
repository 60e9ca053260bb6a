"""Knowledge distillation: a smaller student learns from a teacher's whole output distribution, not just the label.

A hard label says only which token (or class) is right. The teacher's softened distribution also says how
plausible every other one is ("after 'born in', any of the 12 cities is likely, nothing else is"), so each
training example carries far more information (Hinton et al. 2015, "dark knowledge"). The student minimises

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross_entropy(labels)

T > 1 softens both distributions so the small probabilities matter; the T^2 factor keeps the gradient size
comparable as T changes. `alpha=0` is plain fine-tuning on hard labels (the teacher is not even run).

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from course_utils import zoo
from course_utils.errors import CourseError
from course_utils.peft_methods import transformer_blocks
from course_utils.profiles import seed_torch
from course_utils.zoo import TinySpec


LIBRARY_CALLS = {
    "transformers:Trainer.compute_loss": ["model", "inputs", "return_outputs", "num_items_in_batch"],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator"],
    "transformers.models.auto.auto_factory:_BaseAutoModelClass.from_config": ["config"],
}


class DistillError(CourseError):
    """Bad distillation settings or mismatched teacher/student outputs."""


def _check(temperature: float, alpha: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise DistillError(f"distillation_loss: temperature must be > 0, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise DistillError(f"distillation_loss: alpha (weight of the teacher term) must be in [0, 1], got {alpha!r}")


def _aligned(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
             ignore_index: int):
    """Flatten to (positions, classes) and keep the positions that have a label.

    Causal LMs (3-d logits) predict token i+1 at position i, so logits[:, :-1] pair with labels[:, 1:], exactly
    as the model's own loss shifts them."""
    if student_logits.shape != teacher_logits.shape:
        raise DistillError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                           f"{tuple(teacher_logits.shape)} differ: the two models must share the tokenizer/labels")
    if student_logits.dim() == 3:
        s, t = student_logits[:, :-1], teacher_logits[:, :-1]
        y = labels[:, 1:] if labels is not None else None
    else:
        s, t, y = student_logits, teacher_logits, labels
    s, t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    if y is None:
        return s, t, None
    y = y.reshape(-1)
    keep = y != ignore_index
    return s[keep], t[keep], y[keep]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None,
                      temperature: float = 2.0, alpha: float = 1.0, ignore_index: int = -100) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels), averaged over labelled positions.

    Works for classification logits (batch, classes) and causal-LM logits (batch, length, vocab)."""
    _check(temperature, alpha)
    if labels is None and alpha < 1.0:
        raise DistillError("distillation_loss: alpha < 1 mixes in the hard-label loss, so labels are needed")
    s, t, y = _aligned(student_logits.float(), teacher_logits.float(), labels, ignore_index)
    if s.shape[0] == 0:
        raise DistillError("distillation_loss: no labelled positions in the batch")
    loss = s.new_zeros(())
    if alpha > 0:
        log_q = F.log_softmax(s / temperature, dim=-1)
        log_p = F.log_softmax(t / temperature, dim=-1)
        kl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1).mean()
        loss = loss + alpha * temperature ** 2 * kl
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(s, y)
    return loss


class DistillationTrainer(Trainer):
    """A `Trainer` whose loss is `distillation_loss` against a frozen teacher (same tokenizer, same labels).

    Use it exactly like `Trainer`, with three more keywords: `teacher_model`, `temperature`, `alpha`."""

    def __init__(self, *args, teacher_model=None, temperature: float = 2.0, alpha: float = 1.0, **kwargs):
        _check(temperature, alpha)
        if teacher_model is None and alpha > 0:
            raise DistillError("DistillationTrainer needs a teacher_model when alpha > 0")
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha = temperature, alpha
        self.teacher = teacher_model
        if self.teacher is not None:
            self.teacher.to(self.args.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad = False

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        labels = inputs["labels"]
        features = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**features)
        if self.alpha > 0:
            with torch.no_grad():
                teacher_logits = self.teacher(**features).logits
        else:  # hard labels only: the teacher term has weight 0, so skip the teacher's forward pass
            teacher_logits = outputs.logits.detach()
        loss = distillation_loss(outputs.logits, teacher_logits, labels, self.temperature, self.alpha)
        return (loss, outputs) if return_outputs else loss


def student_model(family: str, tokenizer, spec=None, seed: int = 0, model_class=None, **config_overrides):
    """A freshly initialised *smaller* model of `family` (default: half the width, half the depth of the zoo's tiny
    spec) sharing `tokenizer`; `model_class` picks a head (default causal LM)."""
    from transformers import AutoModelForCausalLM


    spec = spec or STUDENT_SPEC
    config = zoo.tiny_config(family, tokenizer, spec)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    seed_torch(seed)
    return (model_class or AutoModelForCausalLM).from_config(config)


def _student_spec():
    return TinySpec(hidden=64, layers=2, heads=2, intermediate=192)


STUDENT_SPEC = _student_spec()


def shrink_model(model, keep_layers: list[int] | None = None):
    """A copy of `model` with only the blocks in `keep_layers` (default every other block, as DistilBERT did):
    the embeddings, final norm and head are copied as they are, block `keep_layers[i]` becomes block i.

    Starting the student from the teacher's own weights gives it the vocabulary and much of the knowledge for
    free; distillation then teaches it to do with fewer layers what the teacher does with all of them."""
    import copy
    import re


    n = len(transformer_blocks(model))
    keep = list(range(0, n, 2)) if keep_layers is None else list(keep_layers)
    if not keep or any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep):
        raise DistillError(f"shrink_model: keep_layers must be distinct block indices in [0, {n}), got {keep_layers}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):  # Qwen2/Llama list one attention type per layer
        config.layer_types = [config.layer_types[i] for i in keep]
    student = type(model)(config)
    new_index = {old: new for new, old in enumerate(keep)}
    pattern = re.compile(r"^(transformer\.h|model\.layers)\.(\d+)\.")
    state = {}
    for key, value in model.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value.clone()
        elif int(match.group(2)) in new_index:
            state[pattern.sub(f"{match.group(1)}.{new_index[int(match.group(2))]}.", key)] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if "lm_head" not in k]   # the tied head is the embedding matrix
    if missing or unexpected:
        raise DistillError(f"shrink_model: weights did not line up (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    return student
