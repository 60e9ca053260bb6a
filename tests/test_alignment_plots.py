"""Unit tests for course_utils.alignment.plots: lesson 08's figures (tiny random-init models, fast)."""

from course_utils import alignment as A


def test_plot_stages_draws_one_bar_per_stage_and_metric():
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.DataFrame({"refusal": [0.0, 1.0], "over_refusal": [0.0, 0.1], "helpfulness": [0.4, 0.6]},
                         index=["base", "aligned"])
    fig = A.plot_stages(table)
    assert len(fig.axes[0].patches) == 6
    plt.close(fig)
