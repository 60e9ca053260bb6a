"""What the bad-input test files share: a call must fail with one clear line, and each file counts its inputs."""

from hypothesis import HealthCheck, settings

from course_utils.errors import CourseError

FAST = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def expect_clear_error(counter: dict, fn, *args, match: str | None = None, **kwargs) -> str:
    """`fn(*args, **kwargs)` must raise a CourseError whose message is one non-empty line (and contains `match`);
    `counter["n"]` counts the inputs tried."""
    counter["n"] += 1
    try:
        fn(*args, **kwargs)
    except CourseError as err:
        msg = str(err)
        assert msg.strip() and "\n" not in msg.strip(), f"{getattr(fn, '__name__', fn)}: not one line: {msg!r}"
        if match:
            assert match.lower() in msg.lower(), f"{getattr(fn, '__name__', fn)}: {msg!r} does not name {match!r}"
        return msg
    except Exception as err:  # noqa: BLE001 - the point is to catch the unclear ones
        raise AssertionError(f"{getattr(fn, '__name__', fn)}{args!r:.200}: raised {type(err).__name__}: {err} "
                             f"instead of a CourseError") from err
    raise AssertionError(f"{getattr(fn, '__name__', fn)}{args!r:.200}: accepted bad input silently")
