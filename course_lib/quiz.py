"""Self-check questions: a few multiple-choice questions per lesson that answer themselves.

    from course_lib import quiz
    quiz.show("02")

The questions of lesson ``NN`` are in ``course_lib/quizzes/NN.json`` (shipped with the package,
so they work in Colab). Each question has one correct answer among its choices and a line of
feedback for every choice, saying why it is right or wrong. They are shown with jupyterquiz,
which puts its JavaScript into the cell's output: the quiz works in a live notebook, in Colab,
and on the static site without a network. Nothing is recorded or sent anywhere.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

FOLDER = Path(__file__).parent / "quizzes"


@lru_cache(maxsize=None)
def questions(lesson: str) -> list[dict]:
    """The validated questions of ``lesson`` ("02"), in jupyterquiz's format."""
    path = FOLDER / f"{lesson}.json"
    if not path.exists():
        known = sorted(p.stem for p in FOLDER.glob("*.json"))
        raise FileNotFoundError(f"no self-check questions for lesson {lesson!r} ({path}); lessons with questions: {known}")
    items = json.loads(path.read_text(encoding="utf-8"))
    for i, q in enumerate(items, 1):
        where = f"{path.name}, question {i}"
        if q.get("type") != "multiple_choice" or not q.get("question"):
            raise ValueError(f"{where}: needs a 'question' and type 'multiple_choice'")
        answers = q.get("answers", [])
        if len(answers) < 3 or sum(bool(a.get("correct")) for a in answers) != 1:
            raise ValueError(f"{where}: needs at least three choices, exactly one of them correct")
        if any(not a.get("answer") or not a.get("feedback") for a in answers):
            raise ValueError(f"{where}: every choice needs its text and a line of feedback")
    return items


def show(lesson: str) -> None:
    """Display the lesson's questions; a click on a choice says whether it is right, and why."""
    from jupyterquiz import display_quiz

    display_quiz(questions(lesson), shuffle_answers=False, max_width=760)
