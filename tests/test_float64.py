"""Every laptop: nothing in course_lib converts a tensor to float64 on a device that may lack it.

Apple's MPS backend has no float64, so a `.double()` on a model's device fails there. The rule,
checked here without a Mac: every float64 conversion in course_lib happens on the CPU. A line
that makes a float64 tensor must say where: move it to the CPU first (`.cpu()` or "cpu" on
the line), create it on the CPU (torch.arange/linspace/full/zeros/ones/randn/tensor/eye with
dtype=torch.float64 and no device), or work in NumPy. The known-answer checks and tests run
on the CPU and are exempt.
"""

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CREATES_ON_CPU = re.compile(r"torch\.(arange|linspace|full|zeros|ones|randn|rand|tensor|eye|empty)\((?![^)]*device)")


def offending_lines() -> list[str]:
    bad = []
    for path in sorted((ROOT / "course_lib").rglob("*.py")):
        if "checks" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        code_by_line: dict[int, str] = {}  # each line's code, strings and comments left out
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type not in (tokenize.STRING, tokenize.COMMENT):
                code_by_line[tok.start[0]] = code_by_line.get(tok.start[0], "") + tok.string
        for number, line in enumerate(text.splitlines(), 1):
            code = code_by_line.get(number, "")
            if not re.search(r"\.double\(\)|float64", code):
                continue
            if "cpu" in line.lower() or CREATES_ON_CPU.search(code) or re.search(r"\bnp\.|numpy|astype", code):
                continue
            if re.search(r"dtype\s*:\s*torch\.dtype\s*=\s*torch\.float64", code):  # a default argument, not a conversion
                continue
            bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return bad


def test_float64_only_on_the_cpu():
    bad = offending_lines()
    assert not bad, "float64 on a device that may be MPS:\n" + "\n".join(bad)
