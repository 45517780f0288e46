"""Sphinx extension: serve MathJax 3 from the site itself, so that math renders with no network.

Sphinx points pages at a MathJax CDN by default; a reader who opens the built site offline
(or behind a firewall) then sees raw TeX. The files come from the ``django-static-mathjax``
package on PyPI (MathJax 3.2.2's own build, no Django needed), listed in requirements.txt:
the single-file ``tex-mml-chtml.js`` component and the web fonts it loads, about 1.6 MB.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def _copy_mathjax(app) -> None:
    try:
        import mathjax  # the django-static-mathjax distribution
    except ImportError as err:
        raise RuntimeError(
            "offline MathJax needs the package django-static-mathjax: pip install -r requirements.txt"
        ) from err
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target = Path(app.doctreedir).parent / "mathjax_static"
    dest = target / "mathjax"
    if not (dest / "tex-mml-chtml.js").exists():
        fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
        (dest / fonts).mkdir(parents=True, exist_ok=True)
        shutil.copy2(es5 / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
        for font in (es5 / fonts).iterdir():
            shutil.copy2(font, dest / fonts / font.name)
    app.config.html_static_path.append(str(target))
    app.config.mathjax_path = "mathjax/tex-mml-chtml.js"


def setup(app):
    app.connect("builder-inited", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
