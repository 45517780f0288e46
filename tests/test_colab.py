"""Every Colab notebook runs as a student meets it.

Each notebook in notebooks/ (the student version that the site's Colab links open) runs top to
bottom in a fresh kernel, in an empty folder, with course_lib installed as a package (built
from this checkout and installed into a folder of its own, as Colab's pip would, not imported
from the source tree), under the smoke profile. The exercise cells raise NotImplementedError
(they wait for the student) and their check cells fail: those two kinds of cell may error,
every other cell must run. So a student who skips an exercise can still run the whole lesson.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAY_FAIL = {"solution", "check"}


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site-packages")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


@pytest.mark.colab
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_as_a_student(notebook, installed_package, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    workdir = tmp_path / "student"
    workdir.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(installed_package))  # the package, ahead of the editable source
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    monkeypatch.setenv("COURSE_PROGRESS", "0")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    seconds = time.perf_counter() - start
    code = [c for c in nb.cells if c.cell_type == "code"]
    where = next(o for o in code[1].outputs if o.get("output_type") == "stream")["text"]
    assert "course_lib" in where and "profile=smoke" in where
    import course_lib

    # the kernel imported the installed copy, not this checkout
    probe = subprocess.run([sys.executable, "-c", "import course_lib; print(course_lib.__file__)"],
                           capture_output=True, text=True, env={**os.environ}, cwd=workdir)
    assert str(installed_package) in probe.stdout, probe.stdout + probe.stderr
    assert course_lib.__version__ in where
    broken = []
    for cell in code:
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors and not MAY_FAIL & set(cell.metadata.get("tags", [])):
            broken.append(f"{cell.source.splitlines()[0][:80]!r}: {errors[0]['ename']}: {errors[0]['evalue'][:200]}")
        if errors and "solution" in cell.metadata.get("tags", []):
            assert errors[0]["ename"] == "NotImplementedError", f"a stub raised {errors[0]['ename']}, not NotImplementedError"
    assert not broken, f"{notebook.name}: cells a student cannot skip failed:\n" + "\n".join(broken)
    assert (workdir / "data").exists() or True  # the run may create data/ in its folder (the cache)
    print(f"{notebook.stem}: {seconds:.1f} s as a student")
