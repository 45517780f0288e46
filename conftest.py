"""pytest set-up shared by the unit tests and the lessons.

Every lesson (``lessons/*.md``, a MyST Markdown notebook) is collected as an nbval notebook
read straight from its source with jupytext, so no ``.ipynb`` is committed. Test ids stay
``lessons/NN_name.md::Cell k``. Kernels inherit this process's environment, so the profile
set here (smoke, unless COURSE_PROFILE says otherwise) reaches them.

Exercises are graded in the same run: before every ``solution`` cell one cell is inserted
that runs the student's stub of that cell (``scripts/export_notebooks.py`` makes it) and then
the exercise's ``check`` cell, and fails if the check passes on the stub. The real solution
and its check then run as written, and must pass. So every lesson run proves both halves:
the solution passes its check, the stub fails it.
"""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

import pytest

os.environ.setdefault("COURSE_PROFILE", "smoke")
os.environ.setdefault("COURSE_PROGRESS", "0")


def _is_lesson(path) -> bool:
    if path.suffix != ".md" or path.parent.name != "lessons":
        return False
    # The same test myst-nb applies, so that pytest and the book agree on what a notebook is.
    from myst_nb.core.read import is_myst_markdown_notebook

    return is_myst_markdown_notebook(path.read_text(encoding="utf-8"))


def pytest_collect_file(file_path, parent):
    if _is_lesson(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None


try:
    import jupytext
    import nbformat
    import nbval.plugin as nbval_plugin
except ImportError:  # pragma: no cover - nbval is in requirements.txt
    nbval_plugin = None

def _export_module():
    spec = importlib.util.spec_from_file_location(
        "export_notebooks", Path(__file__).resolve().parent / "scripts" / "export_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUB_TEST = """\
# Grading test (inserted by conftest.py, not part of the lesson): {name}'s check must fail on the stub.
import contextlib as _contextlib, io as _io
import matplotlib.pyplot as _plt
with _contextlib.redirect_stdout(_io.StringIO()), _contextlib.redirect_stderr(_io.StringIO()):
    try:
        exec(compile({stub!r}, "<stub of {name}>", "exec"), globals())
    except Exception:
        pass
    try:
        exec(compile({check!r}, "<check of {name}>", "exec"), globals())
        _stub_passes = True
    except Exception:
        _stub_passes = False
_plt.close("all")
assert not _stub_passes, "{name}: the check passes on the unsolved stub; it must fail there"
print("{name}: the check fails on the stub, as it must")
"""


def with_stub_tests(nb):
    """The lesson with a stub-must-fail cell inserted before every solution cell."""
    export = _export_module()
    cells = list(nb.cells)
    inserts = {}
    for ex in export.exercises(nb):
        if not ex["solutions"]:
            continue
        checks = [c for c in ex["checks"] if c > ex["solutions"][0]]
        if not checks:
            raise ValueError(f"{ex['name']} has a solution cell but no check cell after it")
        first = ex["solutions"][0]
        stub = "\n\n".join(export.stub_source(cells[i].source, ex["name"]) for i in ex["solutions"] if i < checks[0])
        source = STUB_TEST.format(name=ex["name"], stub=stub, check=cells[checks[0]].source)
        inserts[first] = nbformat.v4.new_code_cell(source)
    out = []
    for i, cell in enumerate(cells):
        if i in inserts:
            out.append(inserts[i])
        out.append(cell)
    nb.cells = out
    return nb


if nbval_plugin is not None:

    class MystNotebook(nbval_plugin.IPyNbFile):
        """nbval's notebook collector, reading a MyST source with jupytext instead of JSON."""

        def collect(self):
            reader = types.SimpleNamespace(**vars(nbformat))
            reader.read = lambda path, as_version=4: with_stub_tests(jupytext.read(path, fmt="md:myst"))
            original = nbval_plugin.nbformat
            nbval_plugin.nbformat = reader
            try:
                yield from super().collect()
            finally:
                nbval_plugin.nbformat = original

else:  # pragma: no cover

    class MystNotebook(pytest.File):
        def collect(self):
            raise RuntimeError("lessons are tested with nbval: pip install -r requirements.txt")
