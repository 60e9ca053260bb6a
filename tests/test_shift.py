import copy
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from course_utils import shift as S
from course_utils import zoo
from course_utils.text import encode

SMALL = zoo.TinySpec(hidden=32, layers=2, heads=2, intermediate=64, max_positions=128)
PROMPTS = ["Mira Stroud was born in", "The weather in Veltra was", "Which company employs Bram Crane?"]
TEXTS = ["Veltra is a town with a harbour. Visitors come in summer to see it.", "Mira Stroud works as a baker."]


@pytest.fixture(scope="module")
def pair(tokenizer):
    return zoo.build_model("gpt2", tokenizer, SMALL, seed=0), zoo.build_model("gpt2", tokenizer, SMALL, seed=1)


class FixedLogits(torch.nn.Module):
    """A stub causal LM that predicts the same hand-built distribution at every position."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone(), requires_grad=False)
        self.config = SimpleNamespace(vocab_size=len(logits))

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1).clone())


def test_identical_models_give_zero_kl_and_all_unshifted(pair, tokenizer):
    base, _ = pair
    same = copy.deepcopy(base)
    for table in (S.answer_shift(base, same, tokenizer, PROMPTS, max_new_tokens=6),
                  S.text_shift(base, same, tokenizer, TEXTS)):
        assert len(table) > 0
        assert table["kl"].abs().max() < 1e-6 and table["kl_reverse"].abs().max() < 1e-6
        assert (table["shift_class"] == "unshifted").all()
        assert S.class_shares(table).loc["all", "unshifted"] == 1.0


@pytest.mark.parametrize("base_rank, cls", [(1, "unshifted"), (2, "marginal"), (3, "marginal"), (4, "shifted"),
                                            (10, "shifted")])
def test_rank_and_class_match_a_hand_built_pair(tokenizer, base_rank, cls):
    vocab, chosen = len(tokenizer), 50
    base_logits = torch.full((vocab,), -5.0)
    better = [7, 8, 9, 10, 11, 12, 13, 14, 15][: base_rank - 1]  # tokens the base prefers to `chosen`
    for k, tid in enumerate(better):
        base_logits[tid] = 5.0 - 0.1 * k
    base_logits[chosen] = 2.0
    tuned_logits = torch.full((vocab,), -5.0)
    tuned_logits[chosen] = 6.0
    table = S.text_shift(FixedLogits(base_logits), FixedLogits(tuned_logits), tokenizer, ["Veltra"])
    assert (table["token_id"] == chosen).all()
    assert (table["base_rank"] == base_rank).all() and (table["shift_class"] == cls).all()
    p_base = torch.softmax(base_logits, -1)
    assert table["base_prob"].iloc[0] == pytest.approx(p_base[chosen].item(), rel=1e-5)
    assert table["base_top"].iloc[0][0][1] == pytest.approx(p_base.max().item(), abs=1e-3)


def test_kl_matches_a_direct_computation(pair, tokenizer):
    base, tuned = pair
    table = S.text_shift(base, tuned, tokenizer, TEXTS)
    ids = torch.tensor([encode(tokenizer, TEXTS[1], add_eos=True)])
    with torch.no_grad():
        lp_b = torch.log_softmax(base(ids).logits[0], -1)
        lp_t = torch.log_softmax(tuned(ids).logits[0], -1)
    kl = torch.nn.functional.kl_div(lp_b, lp_t, log_target=True, reduction="none").sum(-1)  # KL(tuned || base)
    kl_rev = torch.nn.functional.kl_div(lp_t, lp_b, log_target=True, reduction="none").sum(-1)
    part = table[table["item"] == 1].sort_values("position")
    assert len(part) == ids.shape[1] - 1
    assert torch.allclose(torch.tensor(part["kl"].tolist()), kl[:-1], atol=1e-5)
    assert torch.allclose(torch.tensor(part["kl_reverse"].tolist()), kl_rev[:-1], atol=1e-5)
    assert (table["kl"] > 0).all()


def test_answer_tokens_are_the_tuned_models_greedy_choice_and_batch_independent(pair, tokenizer):
    base, tuned = pair
    a = S.answer_shift(base, tuned, tokenizer, PROMPTS, max_new_tokens=5, batch_size=3)
    b = S.answer_shift(base, tuned, tokenizer, PROMPTS, max_new_tokens=5, batch_size=1)
    assert a["token_id"].tolist() == b["token_id"].tolist()
    assert torch.allclose(torch.tensor(a["kl"].tolist()), torch.tensor(b["kl"].tolist()), atol=1e-4)
    assert a.groupby("item")["position"].min().eq(0).all()
    assert (a["tuned_prob"] > 0).all() and (a["base_prob"] > 0).all()
    chat = S.answer_shift(base, tuned, tokenizer, PROMPTS[:1], max_new_tokens=3, chat=True)
    assert set(chat["prompt"]) == {PROMPTS[0]}


def test_mismatched_vocabularies_and_tokenizers_are_refused(pair, tokenizer):
    base, _ = pair
    other = zoo.build_model("gpt2", tokenizer, SMALL)
    other.resize_token_embeddings(len(tokenizer) + 8)
    with pytest.raises(S.ShiftError, match="vocabularies differ"):
        S.text_shift(base, other, tokenizer, TEXTS)
    bigger = copy.deepcopy(tokenizer)
    bigger.add_tokens(["<|brand-new|>"])
    with pytest.raises(S.ShiftError, match="tokenizer differs"):
        S.check_compatible(base, base, tokenizer, tuned_tokenizer=bigger)
    with pytest.raises(S.ShiftError, match="tokenizer has"):
        S.check_compatible(FixedLogits(torch.zeros(10)), FixedLogits(torch.zeros(10)), tokenizer)


def test_summaries(pair, tokenizer):
    base, tuned = pair
    table = S.answer_shift(base, tuned, tokenizer, PROMPTS, max_new_tokens=6)
    shares = S.class_shares(table)
    assert shares.sum(axis=1).iloc[0] == pytest.approx(1.0)
    summary = S.kl_summary(table)
    assert summary.loc["all", "q25"] <= summary.loc["all", "median"] <= summary.loc["all", "q90"]
    assert S.kl_by_position(table, max_position=3).index.max() <= 3
    top = S.top_shifted_tokens(table, n=3, classes=("shifted", "marginal"))
    assert len(top) <= 3 and list(top.columns) == ["token", "count", "mean_base_prob"]
    row = S.summarise(table)
    assert row["tokens"] == len(table)
    assert row["share_unshifted"] + row["share_marginal"] + row["share_shifted"] == pytest.approx(1.0)
    html = S.shift_html(table, 0)
    assert "background" in html and "prompt" in html
    grouped = S.class_shares(table.assign(method="m"), by="method")
    assert list(grouped.index) == ["m"]


def test_bad_input_gives_one_line_errors(pair, tokenizer):
    base, tuned = pair
    with pytest.raises(S.ShiftError, match="no prompts"):
        S.answer_shift(base, tuned, tokenizer, [])
    with pytest.raises(S.ShiftError, match="no texts"):
        S.text_shift(base, tuned, tokenizer, [])
    with pytest.raises(S.ShiftError, match="empty"):
        S.class_shares(S._table([]))
    with pytest.raises(S.ShiftError, match="unknown class"):
        S.top_shifted_tokens(S.text_shift(base, tuned, tokenizer, TEXTS[:1]), classes=("weird",))
    with pytest.raises(S.ShiftError, match="rank starts at 1"):
        S.shift_class(0)


@given(st.integers(min_value=1, max_value=10_000))
def test_shift_class_is_monotone_in_rank(rank):
    order = {c: i for i, c in enumerate(S.CLASSES)}
    assert order[S.shift_class(rank)] <= order[S.shift_class(rank + 1)]
    assert (S.shift_class(rank) == "unshifted") == (rank == 1)


def test_base_prompts_let_the_base_read_the_question_in_its_own_format(pair, tokenizer):
    base, tuned = pair
    # the base reading the very prompt the tuned model read gives exactly the plain table
    plain = S.answer_shift(base, tuned, tokenizer, PROMPTS, max_new_tokens=4)
    same = S.answer_shift(base, tuned, tokenizer, PROMPTS, max_new_tokens=4, base_prompts=PROMPTS)
    assert plain["token_id"].tolist() == same["token_id"].tolist()
    assert torch.allclose(torch.tensor(plain["kl"].tolist()), torch.tensor(same["kl"].tolist()), atol=1e-5)
    # another base prompt: the same answer tokens (the tuned model's), scored by the base after its own prompt
    other = S.answer_shift(base, tuned, tokenizer, PROMPTS, max_new_tokens=4,
                           base_prompts=["Q: " + p + "\nA:" for p in PROMPTS])
    assert other["token_id"].tolist() == plain["token_id"].tolist()
    assert not torch.allclose(torch.tensor(plain["kl"].tolist()), torch.tensor(other["kl"].tolist()))
    with pytest.raises(S.ShiftError, match="base prompts"):
        S.answer_shift(base, tuned, tokenizer, PROMPTS, base_prompts=PROMPTS[:1])
