import pytest

from course_utils import peft_methods as P
from course_utils import zoo


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_lora_targets_attention_only_and_trains_few_parameters(family, tokenizer):
    model = zoo.build_model(family, tokenizer)
    total = zoo.count_parameters(model)
    peft_model = P.apply_lora(model, r=4)
    lora_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n for n in lora_names)
    assert all(("attn" in n) for n in lora_names), "attention-only LoRA touched a non-attention matrix"
    assert zoo.count_parameters(peft_model, trainable_only=True) < 0.05 * total


def test_lora_bad_inputs():
    with pytest.raises(P.PeftError, match="unknown family 'bert'"):
        P.lora_config("bert")
    with pytest.raises(P.PeftError, match="rank must be >= 1"):
        P.lora_config("gpt2", r=0)


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_freeze_lower_layers(family, tokenizer):
    model = zoo.build_model(family, tokenizer)
    blocks = P.transformer_blocks(model)
    P.freeze_lower_layers(model, 2)
    assert not any(p.requires_grad for b in blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for b in blocks[2:] for p in b.parameters())
    assert not model.get_input_embeddings().weight.requires_grad
    with pytest.raises(P.PeftError, match="n_frozen must be in"):
        P.freeze_lower_layers(model, len(blocks) + 1)


EXPECTED_LORA_MODULES = {"gpt2": {"c_attn", "c_proj"}, "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj"},
                         "llama": {"q_proj", "k_proj", "v_proj", "o_proj"}}


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_target_mapping_per_family(family, tokenizer):
    model = zoo.build_model(family, tokenizer)
    matched = P.matching_modules(model, P.LORA_TARGETS[family])
    blocks = len(P.transformer_blocks(model))
    assert {n.rsplit(".", 1)[-1] for n in matched} == EXPECTED_LORA_MODULES[family]
    assert len(matched) == blocks * len(EXPECTED_LORA_MODULES[family])
    assert all(".mlp." not in n for n in matched), "GPT-2's MLP c_proj must not be a LoRA target"
    ia3_targets, ia3_ff = P.IA3_TARGETS[family]
    assert set(P.matching_modules(model, ia3_ff)) <= set(P.matching_modules(model, ia3_targets))


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_every_method_trains_and_the_ladder_of_trainable_parameters(family, tokenizer):
    import torch

    counts = {}
    x = torch.randint(5, 1000, (2, 10))
    for method in P.PEFT_METHODS:
        model = P.apply_method(zoo.build_model(family, tokenizer), method)
        counts[method] = zoo.count_parameters(model, trainable_only=True)
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), f"{method}: a trainable tensor got no gradient"
        assert torch.isfinite(out.loss)
    assert counts["full"] > counts["freeze"] > counts["lora"] > counts["prefix"] > counts["ia3"] > 0


def test_prefix_config_fits_grouped_kv_heads(tokenizer):
    model = P.apply_method(zoo.build_model("qwen2", tokenizer), "prefix", num_virtual_tokens=4)
    cfg = model.base_model.config
    kv_width = cfg.hidden_size // cfg.num_attention_heads * cfg.num_key_value_heads
    # one key and one value vector of the KV width per virtual token and layer
    assert zoo.count_parameters(model, trainable_only=True) == 4 * cfg.num_hidden_layers * 2 * kv_width


def test_bad_method_names_targets_and_sizes(tokenizer):
    model = zoo.build_model("gpt2", tokenizer)
    with pytest.raises(P.PeftError, match="unknown fine-tuning method 'bitfit'"):
        P.apply_method(model, "bitfit")
    with pytest.raises(P.PeftError, match=r"target module\(s\) \['q_proj'\] match nothing .*'c_attn'"):
        P.apply_lora(model, target_modules=["q_proj"])
    with pytest.raises(P.PeftError, match=r"\['gate'\] match nothing"):   # a suffix must be a whole name part
        P.apply_lora(zoo.build_model("llama", tokenizer), target_modules=["q_proj", "gate"])
    with pytest.raises(P.PeftError, match="rank must be >= 1, got -2"):
        P.apply_lora(model, r=-2)
    with pytest.raises(P.PeftError, match="rank must be >= 1, got 2.5"):
        P.lora_config("gpt2", r=2.5)
    with pytest.raises(P.PeftError, match="num_virtual_tokens >= 1"):
        P.prefix_config(0)
    with pytest.raises(P.PeftError, match="unknown family 'mistral' for IA3"):
        P.ia3_config("mistral")


def test_custom_lora_targets_are_used(tokenizer):
    model = P.apply_lora(zoo.build_model("llama", tokenizer), r=2, target_modules=["v_proj"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("v_proj.lora_" in n for n in names)


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_bottleneck_adapters_start_as_the_identity_and_train_alone(family, tokenizer):
    import torch

    model = zoo.build_model(family, tokenizer).eval()     # no dropout: compare the same function
    x = torch.randint(5, 1000, (2, 10))
    with torch.no_grad():
        before = model(input_ids=x).logits
    model = P.apply_method(model, "adapter", bottleneck=4)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=x).logits, before, atol=1e-6)   # `up` starts at zero
    blocks = len(P.transformer_blocks(model))
    adapters = [m for m in model.modules() if isinstance(m, P.BottleneckAdapter)]
    assert len(adapters) == 2 * blocks                   # after attention and after the MLP, in every block
    d = model.config.hidden_size
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapter_weights = sum(p.numel() for n, p in model.named_parameters() if ".adapter." in n)
    assert adapter_weights == 2 * blocks * (2 * d * 4 + 4 + d)
    assert all(".adapter." in n or "norm" in n or ".ln_" in n for n in trainable)
    assert not model.get_input_embeddings().weight.requires_grad
    state = P.adapter_state_dict(model)
    assert set(state) == trainable
    with pytest.raises(P.PeftError, match="already has bottleneck adapters"):
        P.add_bottleneck_adapters(model)


def test_bottleneck_adapter_bad_inputs(tokenizer):
    with pytest.raises(P.PeftError, match="bottleneck width >= 1"):
        P.add_bottleneck_adapters(zoo.build_model("gpt2", tokenizer), 0)
    with pytest.raises(P.PeftError, match="no bottleneck adapters"):
        P.adapter_state_dict(zoo.build_model("gpt2", tokenizer))
