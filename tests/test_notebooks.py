"""The Colab notebooks: generated from the lessons, up to date, plain Markdown, set-up cell first."""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_notebooks", ROOT / "scripts" / "export_notebooks.py")
export_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_notebooks)

LESSONS = export_notebooks.lessons()


def test_notebooks_are_up_to_date(capsys):
    assert export_notebooks.main(["--check"]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_colab_notebook_is_plain_and_starts_with_setup(lesson):
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson.stem}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "google.colab" in code[0].source  # the first code cell installs course_lib in Colab
    assert not any("remove-cell" in c.metadata.get("tags", []) for c in code)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    leftovers = re.findall(r"\{(?:eq|cite(?::\w)?|ref|doc|admonition|math)\}", markdown)
    assert not leftovers, f"MyST syntax left for Colab: {sorted(set(leftovers))}"
    assert not re.search(r"^:::", markdown, re.M)


def test_export_turns_myst_into_markdown():
    bib = {"ho2020ddpm": ("Ho et al.", "2020")}
    eqs = {}
    text = (
        "(lesson-01)=\n# T\n\n$$\nx = 1\n$$ (eq-one)\n\nSee {eq}`eq-one` and {cite:p}`ho2020ddpm`, "
        "{cite:t}`ho2020ddpm`, {ref}`lesson-02`.\n\n:::{admonition} Exercise 1\n:class: tip\nDo it.\n:::\n"
        "\n```{math}\n:label: eq-two\ny = 2\n```\n\nand {eq}`eq-two`.\n"
    )
    out = export_notebooks.convert_markdown(text, bib, eqs)
    assert "(lesson-01)=" not in out
    assert "\\tag{1}" in out and "See (1)" in out
    assert "(Ho et al., 2020)" in out and "Ho et al. (2020)" in out and "lesson 2" in out
    assert "> **Exercise 1**" in out and "> Do it." in out and ":class:" not in out
    assert "$$\ny = 2\n\\tag{2}\n$$" in out and "and (2)" in out and ":label:" not in out
