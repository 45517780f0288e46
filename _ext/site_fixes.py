"""Sphinx extension: merge a cell's printed output on the page without doubling it in the .ipynb.

myst-nb's ``nb_merge_streams`` joins the stream outputs of a cell into one block on the page,
but it appends the later outputs' text to the first output object *in place*: the executed
notebook that the site offers for download (``_build/jupyter_execute``) then holds the merged
text and the later outputs as well, so those lines appear twice there. Merging a copy keeps
the page as it is and the notebook true to the run.
"""

from __future__ import annotations

import copy

from myst_nb.core import render, utils


def _merge_a_copy(outputs):
    return utils.coalesce_streams(copy.deepcopy(outputs))


def setup(app):
    render.coalesce_streams = _merge_a_copy
    return {"parallel_read_safe": True, "parallel_write_safe": True}
