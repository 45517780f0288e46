"""One helper for every lesson with a knob: a slider in a live notebook, and always a static figure.

    from course_lib import widgets
    widgets.sweep(lambda ax, t: ax.imshow(decode(t)), values=[0, 0.25, 0.5, 0.75, 1], label="t")

``render(ax, value)`` draws the picture for one value of the knob into a matplotlib axes.
``sweep`` always draws the *static* figure, ``render`` at several values side by side, which is
what a printed page shows and what a reader without JavaScript sees. With ``ipywidgets`` it
also shows a slider over the same values: every value is drawn once into an image, and the
slider picks the image in the browser (``jslink``), so the slider works with no kernel: in a
notebook, and on the rendered site, where the build embeds the widget's state.

Whether the slider appears: ``interactive=True`` / ``False`` decides; by default
(``interactive=None``) it appears in a live front end (Jupyter, VS Code, Colab) and not in a
headless run (tests, ``nbconvert``). ``COURSE_WIDGETS=1`` or ``0`` overrides the guess: the
site build (``make site``) sets 1, so the site's pages carry working sliders.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np

Render = Callable[[Any, float], Any]


@dataclass
class Sweep:
    """What :func:`sweep` made: the static figure, the values it shows, and the slider (None without one)."""

    figure: Any
    shown: list[float]
    slider: Any | None = None
    box: Any | None = None


def _check(render, values, label, panels) -> list[float]:
    if not callable(render):
        raise TypeError(
            f"render must be a function render(ax, value) that draws into a matplotlib axes, got {type(render).__name__}"
        )
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"values must be a list of numbers, e.g. [0.0, 0.5, 1.0], got {type(values).__name__}")
    vals = list(np.asarray(values, dtype=object).ravel()) if isinstance(values, np.ndarray) else list(values)
    if not vals:
        raise ValueError("values is empty: pass at least one value of the knob, e.g. [0.0, 0.5, 1.0]")
    bad = [v for v in vals if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"values must be finite numbers; these are not: {bad[:3]} (convert tensors with float(v))")
    if not isinstance(label, str) or not label.strip():
        raise ValueError("label must name the knob, e.g. label='t' or label='temperature'")
    if panels is not None and (not isinstance(panels, int) or not 1 <= panels <= len(vals)):
        raise ValueError(f"panels must be an int between 1 and len(values) = {len(vals)}, got {panels!r}")
    return [float(v) for v in vals]


def _live_front_end() -> bool:
    """True in a kernel that a person's front end talks to; False in scripts, tests and headless builds."""
    forced = os.environ.get("COURSE_WIDGETS")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "kernel"):
        return False
    # Jupyter server names the session of a kernel it starts; VS Code and Colab leave their own marks.
    return "JPY_SESSION_NAME" in os.environ or "VSCODE_PID" in os.environ or "google.colab" in sys.modules


def _evenly(values: list[float], panels: int) -> list[float]:
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, panels)).astype(int))
    return [values[i] for i in idx]


def _title(label: str, value: float) -> str:
    return f"{label} = {value:.3g}"


def sweep(
    render: Render,
    values: Sequence[float],
    label: str,
    *,
    panels: int | None = None,
    panel_size: float = 1.6,
    title: str | None = None,
    interactive: bool | None = None,
    show: bool = True,
) -> Sweep:
    """Draw ``render(ax, value)`` for a sweep of ``values``: a static row of panels, plus a slider when live.

    ``panels``: how many values the static figure shows (evenly spaced in ``values``, both ends
    included; default all of them, at most 10). ``label`` names the knob in panel titles and
    on the slider. ``interactive``: True forces the slider (and needs ``ipywidgets``), False
    never makes one, None decides by :func:`_live_front_end`. ``show=False`` leaves the
    static figure open for the caller (tests, or further annotation).
    """
    vals = _check(render, values, label, panels)
    shown = _evenly(vals, panels if panels is not None else min(len(vals), 10))
    fig, axes = plt.subplots(1, len(shown), figsize=(panel_size * len(shown), panel_size * 1.15), squeeze=False)
    for ax, v in zip(axes[0], shown):
        render(ax, v)
        ax.set_title(_title(label, v), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    result = Sweep(figure=fig, shown=shown)
    if show:
        plt.show()

    live = _live_front_end() if interactive is None else bool(interactive)
    if live:
        result.slider, result.box = _slider(render, vals, label, panel_size)
    return result


def _frame(render: Render, value: float, label: str, panel_size: float) -> bytes:
    """One value of the knob drawn to PNG bytes."""
    import io

    fig, ax = plt.subplots(figsize=(panel_size * 2, panel_size * 2))
    render(ax, value)
    ax.set_title(_title(label, value), fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _slider(render: Render, values: list[float], label: str, panel_size: float):
    """A slider over pre-drawn frames, linked in the browser (jslink): it works with no kernel.

    Every value is drawn once, up front, into an image; the slider picks which image a Stack
    shows. The link lives in the page's JavaScript, so on the rendered site (no kernel) the
    slider moves the picture just as it does in a live notebook.
    """
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError(
            "the live slider needs ipywidgets: pip install ipywidgets (or pass interactive=False for the static figure only)"
        ) from err
    from IPython.display import display

    frames = [ipywidgets.Image(value=_frame(render, v, label, panel_size), format="png") for v in values]
    stack = ipywidgets.Stack(children=frames, selected_index=0)
    slider = ipywidgets.SelectionSlider(
        options=[(f"{v:.3g}", v) for v in values], value=values[0], description=label, continuous_update=True
    )
    ipywidgets.jslink((slider, "index"), (stack, "selected_index"))
    box = ipywidgets.VBox([slider, stack])
    display(box)
    return slider, box
