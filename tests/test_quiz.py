"""Self-check questions: every lesson has them, well formed, and the lesson shows them."""

import json
import re
from pathlib import Path

import pytest

from course_lib import quiz

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.md"))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_shows_its_questions(lesson):
    number = lesson.name[:2]
    text = lesson.read_text(encoding="utf-8")
    assert f'quiz.show("{number}")' in text, f"{lesson.name}: add a 'Check yourself' section with quiz.show(\"{number}\")"
    items = quiz.questions(number)
    assert len(items) >= 3, f"{lesson.name}: at least three self-check questions"
    for q in items:  # one correct choice, and no choice repeated
        texts = [a["answer"] for a in q["answers"]]
        assert len(set(texts)) == len(texts), q["question"]


def test_bad_question_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(quiz, "FOLDER", tmp_path)
    quiz.questions.cache_clear()
    with pytest.raises(FileNotFoundError, match="no self-check questions"):
        quiz.questions("42")
    (tmp_path / "42.json").write_text(json.dumps([{"question": "?", "type": "multiple_choice", "answers": [
        {"answer": "a", "correct": True, "feedback": "yes"}, {"answer": "b", "correct": True, "feedback": "no"},
        {"answer": "c", "correct": False, "feedback": "no"}]}]))
    with pytest.raises(ValueError, match="exactly one of them correct"):
        quiz.questions("42")
    quiz.questions.cache_clear()


def test_the_questions_ship_with_the_package():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"quizzes/\*\.json"', text), "package-data must include course_lib/quizzes/*.json (Colab installs the package)"
