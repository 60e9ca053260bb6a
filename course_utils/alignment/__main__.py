"""`python -m course_utils.alignment sweep`: rebuild lesson 08's shipped validation sweep (about two minutes).

Used in lessons: 08
"""

from course_utils.alignment.recipe import run_pref_sweep
from course_utils.profiles import setup


def main(argv: list[str]) -> None:
    """Set up the run (profile, threads, seeds), then rebuild the sweep when asked to."""
    setup()
    if "sweep" in argv:
        for row in run_pref_sweep():
            print(row)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
