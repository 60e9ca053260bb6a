import os
import random

import pytest

from course_utils import profiles


def test_env_var_picks_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert profiles.choose_profile() == "cpu"
    assert profiles.choose_profile("CPU") == "cpu"


def test_default_follows_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "cuda_available", lambda: True)
    assert profiles.choose_profile() == "gpu"
    monkeypatch.setattr(profiles, "cuda_available", lambda: False)
    assert profiles.choose_profile() == "cpu"


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "tpu")
    with pytest.raises(profiles.ProfileError, match="unknown profile 'tpu'"):
        profiles.choose_profile()


def test_setup_seeds_and_goes_offline(monkeypatch, capsys):
    import torch

    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    env = profiles.setup(seed=7)
    a = (random.random(), torch.rand(3).tolist())
    profiles.setup(seed=7, quiet=True)
    assert a == (random.random(), torch.rand(3).tolist())
    assert env.profile == "cpu" and env.device == "cpu" and env.offline
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    report = capsys.readouterr().out
    assert "profile   cpu" in report and "transformers" in report
    assert len(report.splitlines()) < 25  # one screen
