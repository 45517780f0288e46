"""Grade a class's notebooks for one lesson: run each, with the official checks, and write a table.

    python scripts/grade.py lessons/05_variational_autoencoders.md submissions/*.ipynb --out grades.csv

Each submission is a student notebook of that lesson (as ``make assignments`` or the Colab copy
gives it), with the student's code in the solution cells. Before it runs, every ``check`` cell
is replaced by the official check of the same exercise, so an edited check grades nothing.
The notebook then runs top to bottom in a fresh kernel (errors do not stop it), under the
profile given (``smoke`` by default: seconds per lesson), in a folder of its own. An exercise
is passed when its check cell printed "Exercise N: all checks passed". The table has one row
per submission and one column per graded exercise (1 passed, 0 not), and a total.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("export_notebooks", HERE / "export_notebooks.py")
export = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export)


def official_checks(lesson: Path) -> list[tuple[str, str]]:
    """(exercise name, check source) for every graded exercise of the lesson, in order."""
    import jupytext

    nb = jupytext.read(lesson, fmt="md:myst")
    return [(ex["name"], nb.cells[ex["checks"][0]].source) for ex in export.exercises(nb) if ex["checks"]]


def grade_one(path: Path, checks: list[tuple[str, str]], profile: str, timeout: int) -> dict[str, int]:
    nb = nbformat.read(path, as_version=4)
    check_cells = [c for c in nb.cells if c.cell_type == "code" and "check" in export.tags(c)]
    if len(check_cells) != len(checks):
        raise ValueError(
            f"{path.name}: {len(check_cells)} check cells, the lesson has {len(checks)}: "
            "is this a notebook of that lesson, with its check cells kept?"
        )
    for cell, (_, source) in zip(check_cells, checks):
        cell.source = source
    env_before = dict(os.environ)
    os.environ["COURSE_PROFILE"] = profile
    os.environ.setdefault("COURSE_PROGRESS", "0")
    workdir = Path(tempfile.mkdtemp(prefix="grade-"))
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {}
    for cell, (name, _) in zip(check_cells, checks):
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        result[name] = int(f"{name}: all checks passed" in text)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lesson", type=Path, help="the lesson's MyST source, e.g. lessons/03_maximum_likelihood_and_kl.md")
    parser.add_argument("submissions", type=Path, nargs="+", help="the students' .ipynb files")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"))
    parser.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    if not args.lesson.exists():
        parser.error(f"no lesson at {args.lesson}: pass the lesson's .md file from lessons/")
    checks = official_checks(args.lesson)
    names = [name for name, _ in checks]
    rows = []
    for path in args.submissions:
        start = time.perf_counter()
        try:
            marks = grade_one(path, checks, args.profile, args.timeout)
            note = ""
        except Exception as err:  # a broken file is reported in its row, the others still graded
            marks, note = {name: 0 for name in names}, f"not graded: {err}"
        rows.append({"submission": path.name, **marks, "total": sum(marks.values()), "note": note})
        print(f"{path.name}: {sum(marks.values())}/{len(names)} in {time.perf_counter() - start:.1f} s {note}")
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["submission", *names, "total", "note"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} submissions, {len(names)} graded exercises)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
