"""Alignment at toy scale: measure refusals, break them with fine-tuning, restore them with DPO and RLHF.

What a learner should take away:
- *Alignment is a behaviour learned in fine-tuning*, so further fine-tuning can undo it. We measure it by
  generation on held-out requests: the **refusal rate** on unsafe requests, the **over-refusal rate** on safe ones,
  and **helpfulness** (the answer to a safe question carries the right fact).
- *Preference pairs* (prompt, chosen, rejected) are the currency of DPO and of reward models. We make them from the
  world data, and with a Constitutional-AI style critique-and-revise loop.
- The `trl` trainers (`SFTTrainer`, `DPOTrainer`, `RewardTrainer`, `GRPOTrainer`) do the training; this package only
  formats the data the way our tokenizer's chat template expects and picks small, fast settings.

The package, by role (each file reads in one sitting; `from course_utils import alignment as A` gives every name):
    models        the model being aligned: `load_chat_model`, `chat_generate`, `AlignmentError`
    judge         judging answers: refusal, compliance, well-formedness, the rates of a stage, sampled refusals
    data          SFT rows (aligning, benign and harmful breaks) and preference pairs
    trainers      the trl trainer wrappers: SFT, DPO, reward model, GRPO, and their settings
    recipe        lesson 08's settings, its two breaks, and the validation sweep that chose DPO's rate
    constitution  the constitution, its critics, and critique-and-revise pairs
    plots         lesson 08's figures

Used in lessons: 08
"""

from course_utils.alignment.constitution import (CONSTITUTION, Critique, Principle, critique_revise_pairs,
                                                 model_critic, revise, rule_critic)
from course_utils.alignment.data import (BENIGN_INSTRUCTIONS, BENIGN_STYLES, COMPLIANCE, HELDOUT_COMPLIANCE,
                                         HELDOUT_REFUSALS, PAIR_FIELDS,
                                         aligned_sft_rows, benign_sft_rows, check_pairs, compliant_answer,
                                         harmful_sft_rows, preference_pairs, sft_rows)
from course_utils.alignment.judge import (COMPLIANCE_SIGNS, INSTRUCTION_SIGNS, base_wording, complies,
                                          detected_compliance, evaluate_safety, fluency, is_refusal, known_texts,
                                          restored_share, safety_answers, safety_rates, sampled_refusal_rate,
                                          split_overlap, split_rows, stage_metrics, well_formed)
from course_utils.alignment.models import CHAT_MODELS, AlignmentError, chat_generate, load_chat_model
from course_utils.alignment.plots import plot_dpo_logs, plot_stages
from course_utils.alignment.recipe import (PARTIAL_FLOOR, PARTIAL_STEPS, PREF_SWEEP_METHODS, PREF_SWEEP_RATES, PREF_SWEEP_SEEDS, LessonRecipe,
                                           breaking_data, choose_pref_rate, lesson_recipe, partial_break, pref_sweep_path, read_pref_sweep,
                                           run_pref_sweep, validation_split)
from course_utils.alignment.trainers import (DPO_LOG, AlignConfig, RLConfig, dpo_log, dpo_train, pairwise_accuracy,
                                             reward_function, reward_history, reward_scores, reward_train, rl_train,
                                             sft_train)
from course_utils.classify import classifier_from  # lesson 08 builds its reward model as A.classifier_from
from course_utils.text import END, end_of_turn, stop_ids

__all__ = [
    "AlignConfig", "AlignmentError", "BENIGN_INSTRUCTIONS", "BENIGN_STYLES", "CHAT_MODELS", "COMPLIANCE",
    "COMPLIANCE_SIGNS", "CONSTITUTION", "Critique", "DPO_LOG", "END", "HELDOUT_COMPLIANCE", "HELDOUT_REFUSALS",
    "INSTRUCTION_SIGNS", "LessonRecipe", "PAIR_FIELDS", "PARTIAL_FLOOR", "PARTIAL_STEPS", "PREF_SWEEP_METHODS", "PREF_SWEEP_RATES",
    "PREF_SWEEP_SEEDS", "Principle", "RLConfig", "aligned_sft_rows", "base_wording", "benign_sft_rows",
    "breaking_data", "chat_generate", "check_pairs", "choose_pref_rate", "classifier_from", "compliant_answer",
    "complies", "critique_revise_pairs", "detected_compliance", "dpo_log", "dpo_train", "end_of_turn",
    "evaluate_safety", "fluency", "harmful_sft_rows", "is_refusal", "known_texts", "lesson_recipe",
    "load_chat_model", "model_critic", "pairwise_accuracy", "partial_break", "plot_dpo_logs", "plot_stages", "pref_sweep_path",
    "preference_pairs", "read_pref_sweep", "restored_share", "revise", "reward_function", "reward_history",
    "reward_scores", "reward_train", "rl_train", "rule_critic", "run_pref_sweep", "safety_answers", "safety_rates",
    "sampled_refusal_rate", "sft_rows", "sft_train", "split_overlap", "split_rows", "stage_metrics", "stop_ids",
    "validation_split", "well_formed",
]
