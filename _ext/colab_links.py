"""Sphinx extension: an "Open in Colab" link at the top of every lesson page.

Colab opens only ``.ipynb`` files, so the link points at ``notebooks/<lesson>.ipynb`` in the
course repository (``repository.url`` in _config.yml), at the tag of this release
(``v`` + ``course_lib.__version__``, see scripts/release.py), which ``scripts/export_notebooks.py``
generates from the MyST sources. The link is plain HTML: it needs no JavaScript.

It also offers the executed notebook for download (the theme's ".ipynb" button): the theme
does that only when a launch provider is configured, and its own Colab launch button would
point at the ``.md`` source, which Colab cannot open. So the executed notebook of each lesson
is copied next to its source in ``_sources/`` and the theme is told where it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from docutils import nodes


def _add_link(app, doctree) -> None:
    docname = app.env.docname
    if not docname.startswith("lessons/"):
        return
    repo = (app.config.html_theme_options or {}).get("repository_url", "").rstrip("/")
    # The release's tag, not a moving branch: a notebook opened in week 1 stays the same in week 10.
    from course_lib import __version__

    ref = f"v{__version__}"
    if not repo.startswith("https://github.com/"):
        return
    path = repo[len("https://github.com/") :]
    name = docname.split("/", 1)[1]
    url = f"https://colab.research.google.com/github/{path}/blob/{ref}/notebooks/{name}.ipynb"
    html = (
        f'<p class="colab-link"><a href="{url}" target="_blank" rel="noopener">'
        "&#9654; Open this lesson in Colab</a> (free GPU; the first cell installs course_lib)</p>"
    )
    for section in doctree.traverse(nodes.section):
        title = section.next_node(nodes.title)
        index = section.index(title) + 1 if title is not None else 0
        section.insert(index, nodes.raw("", html, format="html"))
        break


def _offer_executed_notebook(app, pagename, templatename, context, doctree) -> None:
    if not pagename.startswith("lessons/"):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("doctree-read", _add_link)
    # before the theme draws its header buttons (priority 501), after it prepares them (500)
    app.connect("html-page-context", _offer_executed_notebook, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
