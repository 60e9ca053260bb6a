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


def test_seed_everything_sets_the_generators_transformers_set_seed_sets():
    """The course seeds a run through `seed_everything`; it leaves Python, NumPy and torch exactly where
    `transformers.set_seed` would, so runs that used to call that repeat bit for bit."""
    import random

    import numpy as np
    import torch
    from transformers import set_seed

    def state():
        return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state().numpy().tobytes()

    for seed in (0, 7, 2**32 - 1):
        set_seed(seed)
        expected = state()
        random.random(), np.random.rand(), torch.rand(2)
        profiles.seed_everything(seed)
        assert state() == expected


def test_seed_torch_fixes_initial_weights_and_leaves_python_and_numpy_alone():
    import numpy as np
    import torch

    random.seed(3), np.random.seed(3)
    before = random.getstate(), np.random.get_state()[1].tobytes()
    profiles.seed_torch(5)
    first = torch.nn.Linear(4, 4).weight.detach().clone()
    profiles.seed_torch(5)
    assert torch.equal(first, torch.nn.Linear(4, 4).weight)
    assert (random.getstate(), np.random.get_state()[1].tobytes()) == before
    with pytest.raises(profiles.ProfileError, match="seed"):
        profiles.seed_torch(-1)


def test_runs_are_seeded_only_through_profiles():
    """One seeding lane: no module but `profiles` calls `transformers.set_seed` or `torch.manual_seed` (local
    generators, `torch.Generator().manual_seed` and `np.random.default_rng`, are not global seeding)."""
    import re
    from pathlib import Path

    package = Path(profiles.__file__).parent
    pattern = re.compile(r"(?<![\w.])set_seed\(|torch\.manual_seed\(|torch\.cuda\.manual_seed")
    offenders = [f"{path.relative_to(package)}:{i}" for path in sorted(package.rglob("*.py"))
                 if path.name != "profiles.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_more_seeds_extends_any_seed_set_the_same_way():
    from course_utils.profiles import ProfileError, more_seeds

    assert more_seeds((0, 1, 2), 5) == (0, 1, 2, 3, 4)
    assert more_seeds((11, 12, 13), 5) == (11, 12, 13, 14, 15)
    assert more_seeds((5, 3), 4) == (5, 3, 6, 7)
    assert more_seeds((0, 1, 2), 2) == (0, 1, 2)  # never fewer seeds than the lesson's
    with pytest.raises(ProfileError, match="more_seeds: n"):
        more_seeds((0,), 0)
