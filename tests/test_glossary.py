"""Every glossary term is linked from the lessons, and the linker links plain text only."""

import nbformat

from course_utils.tools import glossary as G


def test_anchor_and_match_text():
    assert G.anchor("Unshifted, marginal, shifted tokens") == "unshifted-marginal-shifted-tokens"
    assert G.anchor("Distillation (knowledge distillation)") == "distillation-knowledge-distillation"
    assert G.match_text("Distillation (knowledge distillation)") == "Distillation"
    assert G.match_text("Refusal rate, over-refusal") == "Refusal rate"


def test_linker_links_first_plain_mention_only(tmp_path):
    gloss = tmp_path / "G.md"
    gloss.write_text("# Glossary\n\n### LoRA\nlow rank\n\n### EWC\nspring\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# LoRA in a heading\nwe use `LoRA` in code, and [LoRA](x) linked"),
        nbformat.v4.new_markdown_cell("Then LoRA in text, and LoRA again; EWCs too."),
        nbformat.v4.new_code_cell("LoRA = 1")])
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    done = G.link_first_uses([path], gloss, write=True)
    assert done == {"LoRA": "01_x.ipynb", "EWC": "01_x.ipynb"}
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source.startswith("# LoRA in a heading")  # headings, code spans and links untouched
    assert cells[1].source == ("Then [LoRA](https://github.com/finetuning-course/llm-finetuning-course/blob/main/docs/GLOSSARY.md#lora) in text, and LoRA again; "
                               "[EWCs](https://github.com/finetuning-course/llm-finetuning-course/blob/main/docs/GLOSSARY.md#ewc) too.")
    assert cells[2].source == "LoRA = 1"
    assert G.link_first_uses([path], gloss, write=False) == {}  # idempotent


def test_every_glossary_term_is_linked_from_a_lesson():
    missing = [t for t, ok in G.linked_terms().items() if not ok]
    assert not missing, f"glossary terms not linked from any lesson: {missing}; run glossary.link_first_uses(write=True)"
