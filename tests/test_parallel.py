"""`parallel.run_in_processes`: the same answers as a loop, in the same order, whether one process or several."""
import math

import pytest

from course_utils import parallel as P


def test_results_match_a_loop_in_order_on_two_workers_and_on_one():
    tasks = [(float(x), 0.5) for x in range(7)]
    expected = [math.pow(*t) for t in tasks]
    assert P.run_in_processes(math.pow, tasks, workers=2) == expected
    assert P.run_in_processes(math.pow, tasks, workers=1) == expected
    assert P.run_in_processes(math.pow, [], workers=2) == []


def test_an_error_in_a_task_is_raised_here():
    with pytest.raises(ValueError, match="math domain error"):
        P.run_in_processes(math.sqrt, [(4.0,), (-1.0,)], workers=2)


def test_bad_arguments_get_one_line_errors():
    with pytest.raises(P.ParallelError, match="each task is a tuple"):
        P.run_in_processes(math.sqrt, [4.0])
    with pytest.raises(P.ParallelError, match=r"workers must be in \[1, "):
        P.worker_count(0)
    assert P.worker_count(3) == 3 and P.worker_count() >= 1
