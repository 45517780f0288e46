"""widgets.sweep: the static figure has one panel per shown value, the slider exists when asked, bad input names the fix."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from course_lib import widgets


def _render(calls):
    def render(ax, value):
        calls.append(value)
        ax.imshow(np.full((4, 4), value))

    return render


def test_static_figure_has_one_panel_per_value():
    calls = []
    result = widgets.sweep(_render(calls), [0.0, 0.25, 0.5, 0.75, 1.0], "t", interactive=False, show=False)
    assert len(result.figure.axes) == 5
    assert result.shown == [0.0, 0.25, 0.5, 0.75, 1.0] == calls
    assert [ax.get_title() for ax in result.figure.axes][0] == "t = 0"
    assert result.slider is None
    plt.close(result.figure)


def test_panels_picks_evenly_spaced_values_with_both_ends():
    values = list(np.linspace(0, 1, 21))
    result = widgets.sweep(_render([]), values, "t", panels=5, interactive=False, show=False)
    assert len(result.figure.axes) == 5
    assert result.shown[0] == 0.0 and result.shown[-1] == 1.0
    assert result.shown == sorted(result.shown)
    plt.close(result.figure)
    many = widgets.sweep(_render([]), list(range(30)), "k", interactive=False, show=False)
    assert len(many.figure.axes) == 10  # default: at most 10 panels
    plt.close(many.figure)


def test_slider_is_created_when_ipywidgets_is_importable():
    """The slider picks among frames drawn up front, linked in the browser: it needs no kernel."""
    ipywidgets = pytest.importorskip("ipywidgets")
    calls = []
    result = widgets.sweep(_render(calls), [0.0, 0.5, 1.0], "t", interactive=True, show=False)
    assert isinstance(result.slider, ipywidgets.SelectionSlider)
    assert result.slider.description == "t"
    assert [v for _, v in result.slider.options] == [0.0, 0.5, 1.0]
    slider, stack = result.box.children
    assert slider is result.slider and isinstance(stack, ipywidgets.Stack)
    frames = stack.children
    assert len(frames) == 3 and all(f.value[:4] == b"\x89PNG" for f in frames)  # one drawn frame per value
    assert calls.count(1.0) >= 1  # every value was drawn (the static figure draws some of them too)
    assert len({f.value for f in frames}) == 3  # different values, different pictures
    links = [w for w in ipywidgets.Widget.widgets.values() if isinstance(w, ipywidgets.widgets.widget_link.Link)]
    assert any(l.source == (slider, "index") and l.target == (stack, "selected_index") for l in links)
    plt.close("all")


def test_no_slider_in_a_headless_run(monkeypatch):
    monkeypatch.delenv("COURSE_WIDGETS", raising=False)
    result = widgets.sweep(_render([]), [0.0, 1.0], "t", show=False)  # pytest is not a live front end
    assert result.slider is None
    plt.close(result.figure)
    monkeypatch.setenv("COURSE_WIDGETS", "0")
    assert widgets._live_front_end() is False
    monkeypatch.setenv("COURSE_WIDGETS", "1")
    assert widgets._live_front_end() is True


@pytest.mark.parametrize(
    "render, values, label, kwargs, error, fix",
    [
        ("not a function", [0.0], "t", {}, TypeError, "render(ax, value)"),
        (None, [], "t", {}, ValueError, "at least one value"),
        (None, [0.0, float("nan")], "t", {}, ValueError, "finite numbers"),
        (None, "0.5", "t", {}, TypeError, "list of numbers"),
        (None, [0.0, 1.0], "", {}, ValueError, "label must name the knob"),
        (None, [0.0, 1.0], "t", {"panels": 3}, ValueError, "between 1 and len(values)"),
    ],
)
def test_bad_input_names_the_fix(render, values, label, kwargs, error, fix):
    render = _render([]) if render is None else render
    with pytest.raises(error, match=fix.replace("(", r"\(").replace(")", r"\)")):
        widgets.sweep(render, values, label, interactive=False, show=False, **kwargs)
