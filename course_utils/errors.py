"""The course's own error type: one line that says what went wrong and where, never a deep library traceback."""


class CourseError(Exception):
    """Base of every error `course_utils` raises on purpose for bad input or a missing resource."""
