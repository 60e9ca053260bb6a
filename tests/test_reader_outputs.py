"""What a reader sees without a kernel: stored widgets show their final state, runs print no chatter."""

import nbformat
import pytest

from course_utils.tools.runner import outputs_for_readers, run_notebook, widget_text


@pytest.mark.slow
def test_a_finished_progress_bar_is_stored_finished(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(4), desc='steps'):\n    pass")]
    path = tmp_path / "bar.ipynb"
    nbformat.write(nb, path)
    result, executed = run_notebook(path)
    assert result.passed, result.error
    stored = outputs_for_readers(executed)
    assert "widgets" in stored.metadata, "widget state is saved with the notebook"
    texts = [o["data"]["text/plain"] for o in stored.cells[0].outputs if "data" in o]
    assert any("steps: 100%" in t and "4/4" in t for t in texts), texts


def test_widget_text_draws_a_bar_from_saved_state():
    states = {"box": {"state": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
              "l": {"state": {"_model_name": "HTMLModel", "value": "seeds: 100%"}},
              "p": {"state": {"_model_name": "FloatProgressModel", "value": 3, "max": 3}},
              "r": {"state": {"_model_name": "HTMLModel", "value": " 3/3 [00:10&lt;00:00]"}}}
    assert widget_text(states, "box") == "seeds: 100%|██████████| 3/3 [00:10<00:00]"
    assert widget_text(states, "missing") is None
