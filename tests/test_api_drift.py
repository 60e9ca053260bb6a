"""Fails loudly, with the name, when a pinned library renames something course_utils calls."""

import pytest

from course_utils.tools.api_contract import CONFIG_ATTRIBUTES, SIGNATURES, check_contract


def test_installed_libraries_fit_the_course():
    problems = check_contract()
    assert not problems, "library API drift:\n" + "\n".join(problems)


def test_contract_detects_a_renamed_keyword(monkeypatch):
    monkeypatch.setitem(SIGNATURES, "transformers:TrainingArguments", ["evaluation_strategy"])
    monkeypatch.setitem(CONFIG_ATTRIBUTES, "transformers:NoSuchConfig", {"n_embd": 3})
    problems = check_contract()
    assert any("evaluation_strategy" in p for p in problems)
    assert any("NoSuchConfig" in p for p in problems)


@pytest.mark.parametrize("name, pinned", [("transformers", "5.23.0"), ("peft", "0.21.2"), ("trl", "1.16.0"),
                                          ("datasets", "5.2.0")])
def test_pins_are_installed(name, pinned):
    from course_utils.tools.cli import pinned_requirements
    from course_utils.profiles import package_version

    assert pinned_requirements()[name] == pinned
    assert package_version(name) == pinned
