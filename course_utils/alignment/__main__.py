"""`python -m course_utils.alignment sweep`: rebuild lesson 08's shipped validation sweep (about two minutes).

Used in lessons: 08
"""

from course_utils.alignment.recipe import run_pref_sweep
from course_utils.profiles import setup


USAGE = "usage: python -m course_utils.alignment sweep   (rebuilds data_samples/lesson08_pref_sweep.json)"


def main(argv: list[str]) -> int:
    """Set up the run (profile, threads, seeds), then rebuild the sweep; anything else prints the usage line."""
    if argv != ["sweep"]:
        print(USAGE)
        return 2
    setup()
    for row in run_pref_sweep():
        print(row)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
