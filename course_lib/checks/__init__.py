"""Known-answer checks, shared by the unit tests and the lessons' exercises.

Each ``course_lib.checks.lessonNN`` module holds functions that take an implementation (a
function or a module) and raise ``AssertionError`` with a message a student can act on when it
is wrong. The unit tests in ``tests/`` run them on ``course_lib``'s own implementations; an
exercise's check cell runs the very same function on the student's code. So a student who
passes an exercise has passed the test the library itself passes.
"""

from __future__ import annotations


def passed(exercise: str) -> None:
    """Print the line every check cell ends with, once all its assertions held."""
    print(f"{exercise}: all checks passed")
