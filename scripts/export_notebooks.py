"""Export every lesson (MyST Markdown) to plain notebooks: Colab copies, student and instructor versions.

Colab opens only .ipynb files and renders only plain Markdown, so the export
- drops the hidden check cells (tag ``remove-cell``) and keeps every other code cell as is;
- turns MyST syntax into plain Markdown: admonitions into block quotes, labelled equations
  into ``\\tag{n}``, ``{eq}`` references into "(n)", citations into "(Author, year)",
  cross-references into their text, label lines removed.

Two versions of every lesson (see AUTHORING.md for the exercise format):
- **student**: in every ``solution`` cell the lines between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` become ``raise NotImplementedError(...)``; the "Solution" dropdowns are
  dropped; the ``check`` cells stay, so the notebook grades itself. The Colab copies in
  ``notebooks/`` (linked from every page of the site) are the student version.
- **instructor**: everything, solutions included.

Usage:
  python scripts/export_notebooks.py            writes notebooks/ (the Colab copies)
  python scripts/export_notebooks.py --check    exit 1 if notebooks/ is out of date
  python scripts/export_notebooks.py --assignments DIR
                                                writes DIR/student/*.ipynb and DIR/instructor/*.ipynb
``make notebooks`` runs the first, ``make assignments`` the last (into ``assignments/``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
OUT = ROOT / "notebooks"


def bib_labels(path: Path = ROOT / "references.bib") -> dict[str, tuple[str, str]]:
    """key -> (short author text, year) from a BibTeX file: 'Ho et al.', '2020'."""
    labels: dict[str, tuple[str, str]] = {}
    for entry in re.split(r"\n@", "\n" + path.read_text(encoding="utf-8"))[1:]:
        key = re.match(r"\w+\{([^,]+),", entry)
        author = re.search(r"author\s*=\s*\{(.+?)\},?\s*\n", entry, re.S)
        year = re.search(r"year\s*=\s*\{?(\d{4})", entry)
        if not key:
            continue
        names = [a.strip() for a in (author.group(1) if author else "Anonymous").split(" and ")]
        last = [n.split(",")[0] if "," in n else n.split()[-1] for n in names]
        last = [re.sub(r"[{}\\\"']", "", n) for n in last]
        short = last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2 else f"{last[0]} et al."
        labels[key.group(1).strip()] = (short, year.group(1) if year else "n.d.")
    return labels


def _cite(match: re.Match, bib: dict[str, tuple[str, str]]) -> str:
    kind, keys = match.group(1), [k.strip() for k in match.group(2).split(",")]
    found = [bib.get(k, (k, "")) for k in keys]
    if kind == "t":
        return "; ".join(f"{a} ({y})" for a, y in found)
    return "(" + "; ".join(f"{a}, {y}" for a, y in found) + ")"


def _admonitions(text: str) -> str:
    """Turn :::{directive} / ```{directive} blocks (possibly nested in 4 backticks) into quotes."""
    lines, out, stack = text.split("\n"), [], []
    opener = re.compile(r"^(:{3,}|`{3,})\{(\w[\w-]*)\}\s*(.*)$")
    for line in lines:
        m = opener.match(line)
        if m and m.group(2) != "code-cell":
            fence, name, title = m.groups()
            title = title.strip() or name.capitalize()
            stack.append(fence)
            out.append("> " * (len(stack) - 1) + f"> **{title}**")
            out.append("> " * len(stack))
            continue
        if stack and line.strip() == stack[-1]:
            stack.pop()
            continue
        if stack and re.match(r"^:\w[\w-]*:", line):  # directive options such as :class: dropdown
            continue
        out.append("> " * len(stack) + line if stack else line)
    return "\n".join(out)


LABELS = re.compile(r"\$\$ *\((eq-[\w-]+)\)|^:label:\s*(\S+)", re.M)
MATH_BLOCK = re.compile(r"^```\{math\}[ \t]*\n((?::\w+:.*\n)*)((?:.*\n)*?)```[ \t]*$", re.M)


def _math_block(match: re.Match, eqs: dict[str, int]) -> str:
    """A ```{math} directive (with an optional :label:) as $$ ... $$, numbered like the book."""
    label = re.search(r":label:\s*(\S+)", match.group(1))
    body = match.group(2).rstrip("\n")
    if label:
        eqs.setdefault(label.group(1), len(eqs) + 1)
        body += f"\n\\tag{{{eqs[label.group(1)]}}}"
    return f"$$\n{body}\n$$"


def convert_markdown(text: str, bib: dict[str, tuple[str, str]], eqs: dict[str, int]) -> str:
    for label in LABELS.findall(text):  # number equations in order of appearance
        eqs.setdefault(label[0] or label[1], len(eqs) + 1)
    text = re.sub(r"^\([\w-]+\)=\s*\n", "", text, flags=re.M)
    text = MATH_BLOCK.sub(lambda m: _math_block(m, eqs), text)
    text = _admonitions(text)

    def tag(match: re.Match) -> str:
        eqs.setdefault(match.group(2), len(eqs) + 1)
        return f"{match.group(1)}\\tag{{{eqs[match.group(2)]}}}\n$$"

    text = re.sub(r"(\$\$[ \t]*\n(?:.*\n)*?)[ \t]*\$\$ *\((eq-[\w-]+)\)", tag, text)
    text = re.sub(r"\{eq\}`([\w-]+)`", lambda m: f"({eqs.get(m.group(1), '?')})", text)
    text = re.sub(r"\{cite:?(p|t)?\}`([^`]+)`", lambda m: _cite(m, bib), text)
    text = re.sub(r"\{(?:ref|doc)\}`([^`<]+?)\s*<[^`]+>`", r"\1", text)
    text = re.sub(r"\{(?:ref|doc)\}`lesson-0?(\d+)`", r"lesson \1", text)
    pages = page_titles()
    text = re.sub(r"\{(?:ref|doc)\}`([\w-]+)`", lambda m: f"the page \"{pages.get(m.group(1), m.group(1))}\" of the course site", text)
    return text


def page_titles() -> dict[str, str]:
    """label -> title of the book's pages outside lessons/ (notation, run times, ...), for {ref} links."""
    titles = {}
    for page in ROOT.glob("*.md"):
        m = re.search(r"^\(([\w-]+)\)=\s*\n#\s+(.+)$", page.read_text(encoding="utf-8"), re.M)
        if m:
            titles[m.group(1)] = m.group(2).strip()
    return titles


BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE_TITLE = re.compile(r"^(?::{3,}|`{3,})\{admonition\}\s*(Exercise\s+\d+)\s*\((\w+)\)", re.M)
SOLUTION_BLOCK = re.compile(r"^(?P<fence>:{3,}|`{3,})\{admonition\}\s*Solution\b.*?^(?P=fence)[ \t]*$\n?", re.M | re.S)


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def stub_source(source: str, exercise: str = "this exercise") -> str:
    """A solution cell as the student gets it: the marked lines become one NotImplementedError."""
    lines, out, inside = source.split("\n"), [], False
    found = False
    for line in lines:
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{exercise}: nested {BEGIN!r}")
            inside, found = True, True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("{exercise}: write your solution here")')
            continue
        if stripped == END:
            if not inside:
                raise ValueError(f"{exercise}: {END!r} without {BEGIN!r}")
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside or not found:
        raise ValueError(f"{exercise}: a solution cell needs a {BEGIN!r} ... {END!r} pair")
    return "\n".join(out)


def drop_solution_text(markdown: str) -> str:
    """Remove the "Solution" admonitions (the written answers) from a MyST Markdown cell."""
    return SOLUTION_BLOCK.sub("", markdown).strip("\n")


def exercises(nb) -> list[dict]:
    """The exercises of a lesson notebook, in order: name, kind, solution and check cell indices."""
    found: list[dict] = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for name, kind in EXERCISE_TITLE.findall(cell.source):
                found.append({"name": name, "kind": kind, "solutions": [], "checks": []})
        elif found and "solution" in tags(cell):
            found[-1]["solutions"].append(i)
        elif found and "check" in tags(cell):
            found[-1]["checks"].append(i)
    return found


def student_version(nb) -> None:
    """Turn a lesson notebook (read with jupytext) into the student version, in place."""
    current = "this exercise"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            titles = EXERCISE_TITLE.findall(cell.source)
            if titles:
                current = titles[-1][0]
            cell.source = drop_solution_text(cell.source)
        elif "solution" in tags(cell):
            cell.source = stub_source(cell.source, current)
    nb.cells = [c for c in nb.cells if c.cell_type != "markdown" or c.source.strip()]


def export(path: Path, variant: str = "student") -> nbformat.NotebookNode:
    if variant not in ("student", "instructor"):
        raise ValueError(f"unknown variant {variant!r}: use student or instructor")
    nb = jupytext.read(path, fmt="md:myst")
    if variant == "student":
        student_version(nb)
    bib = bib_labels()
    eqs: dict[str, int] = {}
    # number equations in order of appearance, before references to them are resolved
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for label in LABELS.findall(cell.source):
                eqs.setdefault(label[0] or label[1], len(eqs) + 1)
    cells = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "code" and "remove-cell" in tags:
            continue
        if cell.cell_type == "markdown":
            cell.source = convert_markdown(cell.source, bib, eqs)
        cells.append(cell)
    which = (
        "Exercises: write your code where a cell raises `NotImplementedError`; the cell after it "
        "checks your answer." if variant == "student" else "Instructor version: solutions included."
    )
    note = nbformat.v4.new_markdown_cell(
        f"*This notebook is generated from `lessons/{path.name}` of the course "
        "\"Deep Generative Models: the four-paradigm map\". Run the cells in order; in Colab "
        f"choose Runtime → Change runtime type → GPU first. {which}*"
    )
    for i, cell in enumerate([note] + cells):
        cell["id"] = f"cell-{i}"
    out = nbformat.v4.new_notebook(cells=[note] + cells)
    out.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    }
    return out


def lessons() -> list[Path]:
    return sorted(LESSONS.glob("[0-9][0-9]_*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if notebooks/ is out of date")
    parser.add_argument("--assignments", type=Path, metavar="DIR",
                        help="write DIR/student/*.ipynb and DIR/instructor/*.ipynb instead of notebooks/")
    args = parser.parse_args(argv)
    if args.assignments:
        for variant in ("student", "instructor"):
            folder = args.assignments / variant
            folder.mkdir(parents=True, exist_ok=True)
            for path in lessons():
                (folder / (path.stem + ".ipynb")).write_text(nbformat.writes(export(path, variant)) + "\n", encoding="utf-8")
        print(f"wrote {len(lessons())} student and {len(lessons())} instructor notebooks to {args.assignments}/")
        return 0
    stale = []
    OUT.mkdir(exist_ok=True)
    for path in lessons():
        target = OUT / (path.stem + ".ipynb")
        text = nbformat.writes(export(path)) + "\n"
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target.name)
        if not args.check:
            target.write_text(text, encoding="utf-8")
    extra = {p.name for p in OUT.glob("*.ipynb")} - {p.stem + ".ipynb" for p in lessons()}
    if args.check:
        if stale or extra:
            print(f"notebooks/ is out of date ({', '.join(sorted(stale + list(extra)))}): run `make notebooks`")
            return 1
        print("notebooks/ is up to date")
        return 0
    for name in sorted(extra):
        (OUT / name).unlink()
    print(f"wrote {len(stale)} notebook(s) to {OUT}; removed {len(extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
