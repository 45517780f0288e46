"""The figure style: colour-blind-safe colours, told apart by line style as well."""

import matplotlib as mpl
import matplotlib.pyplot as plt

from course_lib import plotting


def test_palette_and_line_styles_are_set_once():
    cycle = mpl.rcParams["axes.prop_cycle"].by_key()
    assert tuple(cycle["color"]) == plotting.PALETTE
    assert len(set(cycle["linestyle"])) >= 4  # series differ by more than colour
    fig, ax = plt.subplots()
    a, = ax.plot([0, 1])
    b, = ax.plot([1, 0])
    assert a.get_linestyle() != b.get_linestyle() and a.get_color() != b.get_color()
    plt.close(fig)
