"""Exercises: every lesson has the three kinds, every coding or experiment exercise a solution and
a check, and the student and instructor versions differ exactly by the solutions.

That each check passes on its solution and fails on its stub is proved when the lessons run
(conftest.py inserts the stub-must-fail cell before every solution cell).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_notebooks", ROOT / "scripts" / "export_notebooks.py")
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)

LESSONS = export.lessons()
GRADED = ("coding", "experiment")
KINDS = ("derivation", "coding", "experiment", "discussion")


def read(path: Path):
    return jupytext.read(path, fmt="md:myst")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_has_the_three_kinds_of_exercise(lesson):
    found = export.exercises(read(lesson))
    assert len(found) >= 3, f"{lesson.name}: {len(found)} exercises, at least 3 wanted"
    names = [ex["name"] for ex in found]
    assert names == [f"Exercise {i}" for i in range(1, len(found) + 1)], f"{lesson.name}: numbered {names}"
    kinds = {ex["kind"] for ex in found}
    assert kinds <= set(KINDS), f"{lesson.name}: unknown kinds {kinds - set(KINDS)}"
    for kind in ("derivation", "coding", "experiment"):
        assert kind in kinds, f"{lesson.name}: no {kind} exercise"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_graded_exercises_have_solution_and_check(lesson):
    nb = read(lesson)
    implements = False
    for ex in export.exercises(nb):
        if ex["kind"] not in GRADED:
            continue
        assert ex["solutions"], f"{lesson.name} {ex['name']}: no cell tagged 'solution'"
        assert ex["checks"] and ex["checks"][0] > ex["solutions"][0], f"{lesson.name} {ex['name']}: no 'check' cell after the solution"
        for i in ex["solutions"]:
            assert "hide-input" in export.tags(nb.cells[i]), f"{lesson.name} {ex['name']}: fold the solution on the site (hide-input)"
            export.stub_source(nb.cells[i].source, ex["name"])  # raises without the markers
        check = nb.cells[ex["checks"][0]].source
        assert f'passed("{ex["name"]}")' in check, f"{lesson.name} {ex['name']}: the check must end with passed({ex['name']!r})"
        if ex["kind"] == "coding" and "course_lib.checks" in check:
            implements = True
    assert implements, f"{lesson.name}: no coding exercise graded by a known-answer check from course_lib.checks"


def test_stub_replaces_only_the_marked_lines():
    source = "def f(x):\n    y = x\n    ### BEGIN SOLUTION\n    return y * 2\n    ### END SOLUTION\n"
    stub = export.stub_source(source, "Exercise 9")
    assert stub == 'def f(x):\n    y = x\n    raise NotImplementedError("Exercise 9: write your solution here")\n'
    with pytest.raises(ValueError, match="BEGIN SOLUTION"):
        export.stub_source("x = 1\n", "Exercise 9")
    with pytest.raises(ValueError, match="without"):
        export.stub_source("### END SOLUTION\n", "Exercise 9")


def test_solution_text_is_dropped_for_students():
    text = (
        ":::{admonition} Exercise 1 (derivation): d\n:class: tip\nDerive.\n:::\n\n"
        ":::{admonition} Solution\n:class: dropdown\nThe answer.\n:::\n\n"
        "````{admonition} Solution: code\n:class: dropdown\n```python\nx = 1\n```\n````\nAfter."
    )
    out = export.drop_solution_text(text)
    assert "Derive." in out and "After." in out
    assert "The answer." not in out and "x = 1" not in out and "Solution" not in out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_student_and_instructor_versions(lesson):
    student = export.export(lesson, "student")
    teacher = export.export(lesson, "instructor")
    s_text = "\n".join(c.source for c in student.cells)
    t_text = "\n".join(c.source for c in teacher.cells)
    assert "### BEGIN SOLUTION" not in s_text and "NotImplementedError" in s_text
    assert "### BEGIN SOLUTION" in t_text
    assert not re.search(r"^> \*\*Solution", s_text, re.M), "a written solution is left in the student notebook"
    checks = [c.source for c in teacher.cells if "check" in export.tags(c)]
    assert checks and checks == [c.source for c in student.cells if "check" in export.tags(c)]


def test_assignments_command_writes_both_versions(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_notebooks.py"), "--assignments", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for variant in ("student", "instructor"):
        written = sorted(p.stem for p in (tmp_path / variant).glob("*.ipynb"))
        assert written == [p.stem for p in LESSONS]
        for path in (tmp_path / variant).glob("*.ipynb"):
            nbformat.validate(nbformat.read(path, as_version=4))


def test_no_site_only_latex_macros():
    """Colab renders formulas without the site's MathJax configuration: standard LaTeX only."""
    assert not re.search(r"^\s*macros:", (ROOT / "_config.yml").read_text(), re.M)
    for lesson in LESSONS:
        text = lesson.read_text(encoding="utf-8")
        bad = re.findall(r"\\(?:E|KL)(?![A-Za-z])", text)
        assert not bad, f"{lesson.name}: site-only macros {sorted(set(bad))}; write \\mathbb{{E}} and \\mathrm{{KL}}"


def test_grade_command_runs_the_official_checks(tmp_path):
    """The bulk grader: solutions score full marks, stubs zero, and an edited check counts for nothing."""
    lesson = ROOT / "tests" / "fixtures" / "99_tiny_lesson.md"
    student = export.export(lesson, "student")
    teacher = export.export(lesson, "instructor")
    cheat = export.export(lesson, "student")
    for cell in cheat.cells:
        if "check" in export.tags(cell):
            cell.source = 'print("Exercise 1: all checks passed"); print("Exercise 2: all checks passed")'
    paths = []
    for name, nb in (("student", student), ("instructor", teacher), ("cheat", cheat)):
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(nb, paths[-1])
    out = tmp_path / "grades.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "grade.py"), str(lesson), *map(str, paths), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import csv

    rows = {r["submission"]: r for r in csv.DictReader(out.open())}
    assert rows["instructor.ipynb"]["total"] == "2"
    assert rows["student.ipynb"]["total"] == "0"
    assert rows["cheat.ipynb"]["total"] == "0"


def test_bench_collects_time_memory_and_headlines(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from course_lib import runtime

    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        runtime.headline("test NLL", 78.25, "nats/image", ".2f")
    assert bench.HEADLINE.findall(out.getvalue()) == [("test NLL", "78.25 nats/image")]
    row = bench.run_lesson(ROOT / "tests" / "fixtures" / "99_tiny_lesson.md", "smoke", timeout=120)
    assert not row["error"] and row["wall"] > 0 and row["peak_mib"] > 10
    slow = dict(row, wall=25.0, lesson="99_slow")
    text = bench.table([row, slow], "smoke")
    assert "| 99_slow | 25.0 |" in text and "**no**" in text and "| yes |" in text
    far = dict(row, device="cuda (NVIDIA H200)", cores=16)  # a row measured on another machine says so
    assert "16 cores, device cuda (NVIDIA H200)" in bench.table([far], "gpu")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_prints_its_measured_times(lesson):
    """Run times are printed from the bench's measurements, never typed: setup(lesson=...) and a bench row."""
    import json

    text = lesson.read_text(encoding="utf-8")
    assert f'runtime.setup(seed=0, lesson="{lesson.name[:2]}")' in text, "call runtime.setup(seed=0, lesson=\"NN\")"
    assert not re.search(r"\*\*Time to run\.\*\*[^\n]*\d+\s*(s|min|minutes|seconds)\b", text), "no typed run times"
    times = json.loads((ROOT / "course_lib" / "measured_times.json").read_text())
    for profile in ("smoke", "cpu"):
        assert lesson.stem in times.get(profile, {}), f"no {profile} time for {lesson.stem}: run make bench PROFILE={profile}"
