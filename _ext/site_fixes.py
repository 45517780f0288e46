"""Sphinx extension: two small fixes of the stack that a reader would otherwise meet.

1. Printed output merged on the page without doubling it in the downloadable .ipynb.
myst-nb's ``nb_merge_streams`` joins the stream outputs of a cell into one block on the page,
but it appends the later outputs' text to the first output object *in place*: the executed
notebook that the site offers for download (``_build/jupyter_execute``) then holds the merged
text and the later outputs as well, so those lines appear twice there. Merging a copy keeps
the page as it is and the notebook true to the run.

2. No script declared twice. sphinx-thebe adds its inline configuration script (``const
THEBE_JS_URL = ...``) once per reading pass, and Jupyter Book makes two, so every page
declared the constant twice and the browser logged a page error. Identical scripts are kept once.
"""

from __future__ import annotations

import copy

from myst_nb.core import render, utils


def _merge_a_copy(outputs):
    return utils.coalesce_streams(copy.deepcopy(outputs))


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    files = context.get("script_files")
    if not files:
        return
    seen, kept = set(), []
    for script in files:
        # a body-only script is added once with filename None and once with '': the same script
        key = (getattr(script, "filename", None) or "",
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    render.coalesce_streams = _merge_a_copy
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
