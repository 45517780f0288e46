"""pytest set-up shared by the unit tests and the lessons.

Every lesson (``lessons/*.md``, a MyST Markdown notebook) is collected as an nbval notebook
read straight from its source with jupytext, so no ``.ipynb`` is committed. Test ids stay
``lessons/NN_name.md::Cell k``. Kernels inherit this process's environment, so the profile
set here (smoke, unless COURSE_PROFILE says otherwise) reaches them.
"""

from __future__ import annotations

import os
import types

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

if nbval_plugin is not None:

    class MystNotebook(nbval_plugin.IPyNbFile):
        """nbval's notebook collector, reading a MyST source with jupytext instead of JSON."""

        def collect(self):
            reader = types.SimpleNamespace(**vars(nbformat))
            reader.read = lambda path, as_version=4: jupytext.read(path, fmt="md:myst")
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
