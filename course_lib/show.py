"""Show library code on the page: a lesson displays the lines that teach instead of copying them."""

from __future__ import annotations

import inspect
import textwrap


def source(obj) -> "object":
    """The source of a function, method or class, syntax-highlighted in Jupyter and on the site."""
    from IPython.display import Code

    return Code(textwrap.dedent(inspect.getsource(obj)), language="python")
