"""Fixtures shared by the unit tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The book built once per test session, every lesson executed under the smoke profile.

    ``COURSE_SITE_DIR=path/to/_build/html`` checks a site built before instead (quicker while
    working on the checks themselves; ``make test`` always builds afresh)."""
    prebuilt = os.environ.get("COURSE_SITE_DIR")
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "COURSE_PROFILE": "smoke", "COURSE_PROGRESS": "0", "COURSE_WIDGETS": "1"}  # embed sliders, as make site does
    env.pop("MPLBACKEND", None)  # a non-inline backend in the kernels would drop every figure
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "-W", "--keep-going", "--path-output", str(out)],
        env=env, capture_output=True, text=True, timeout=1500,
    )
    if proc.returncode != 0:  # the notebook's own traceback comes before Sphinx's: keep both
        output = proc.stdout + proc.stderr
        first = max(0, output.find("Traceback") - 2000)  # the first traceback: the failing notebook's
        (out / "build.log").write_text(output, encoding="utf-8")
        raise AssertionError(f"the book did not build (whole log: {out / 'build.log'}):\n"
                             + output[first:first + 6000] + "\n[...]\n" + output[-3000:])
    return out / "_build" / "html"
