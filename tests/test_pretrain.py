"""course_utils.pretrain: how the shipped base models were pretrained (until they recall the seen people's facts),
and lesson 00's drawing of that recall curve."""

from course_utils import pretrain as P
from course_utils import zoo
from course_utils.world import ATTRIBUTES, biography, make_world


def test_a_short_pretraining_run_records_its_recall_curve(tokenizer, one_thread):
    import random

    world = make_world()
    people = world.seen[:2]
    rng = random.Random(0)
    texts = [biography(p, rng) for p in people for _ in range(8)]
    model = zoo.build_model("gpt2", tokenizer, zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64,
                                                            max_positions=96))
    lines = []
    config = P.PretrainConfig(batch_size=4, steps=4, eval_every=2, warmup_steps=1, decay_steps=0)
    info = P.pretrain(model, tokenizer, texts, people, config, log=lines.append)
    assert info["steps"] == 4 and [h["step"] for h in info["history"]] == [2, 4] and len(lines) == 2
    assert set(info["final_recall"]) == set(ATTRIBUTES) and all(0 <= v <= 1 for v in info["final_recall"].values())
    assert info["config"]["steps"] == 4


def test_the_schedule_decays_at_the_end_or_stays_constant():
    assert P._schedule(P.PretrainConfig(decay_steps=0)) == {"lr_scheduler_type": "constant_with_warmup"}
    decay = P._schedule(P.PretrainConfig(steps=3000, decay_steps=1000))
    assert decay == {"lr_scheduler_type": "warmup_stable_decay", "lr_scheduler_kwargs": {"num_decay_steps": 1000}}
    assert P._schedule(P.PretrainConfig(steps=100, decay_steps=1000))["lr_scheduler_kwargs"]["num_decay_steps"] == 50


def test_plot_build_history_draws_one_panel_per_family():
    import matplotlib

    matplotlib.use("Agg")
    history = [{"step": s, "loss": 1.0, "birth_city": r, "job": r / 2} for s, r in [(200, 0.1), (400, 0.9)]]
    fig = P.plot_build_history({"gpt2": history, "llama": history}, ["birth_city", "job"])
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["gpt2", "llama"]
    assert len(fig.axes[0].lines) == 3  # one line per attribute, and chance
