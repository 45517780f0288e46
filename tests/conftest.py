"""Fixtures shared by the unit tests, and the book built beside them.

The site's tests need the whole book built (every lesson executed under the smoke profile), a
few minutes of one core. On a 2-core machine the rest of the suite keeps only one core busy,
so the build starts in the background as soon as the tests are collected, and the tests that
read the site run last: by the time they start, the build has had the other core to itself.
The build gets its own data cache, so it never reads or writes a file that a lesson run by
nbval is writing at the same moment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_BUILD: dict = {}  # the background build: its process, folder, log and start time


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state. PyTorch seeds each process at random, so a
    test that draws without seeding would otherwise meet different numbers in every run."""
    from course_lib.runtime import seed_everything

    seed_everything(0)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _start_build() -> None:
    out = Path(tempfile.mkdtemp(prefix="course-book-"))
    env = {**os.environ, "COURSE_PROFILE": "smoke", "COURSE_PROGRESS": "0", "COURSE_WIDGETS": "1",  # sliders, as make site
           "COURSE_DATA_DIR": str(out / "data-cache")}  # its own cache: nbval runs the same lessons meanwhile
    env.pop("MPLBACKEND", None)  # a non-inline backend in the kernels would drop every figure
    jb = Path(sys.executable).with_name("jupyter-book")
    log = out / "build.log"
    handle = log.open("w", encoding="utf-8")
    proc = subprocess.Popen([str(jb), "build", str(ROOT), "-W", "--keep-going", "--path-output", str(out)],
                            env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)
    _BUILD.update(proc=proc, out=out, log=log, handle=handle, start=time.perf_counter())

    def note_the_end():  # when the build finished, not when a test first asked for it
        proc.wait()
        _BUILD["seconds"] = time.perf_counter() - _BUILD["start"]

    threading.Thread(target=note_the_end, daemon=True).start()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """Put the tests that read the built site last, and start the build now (unless told where one is)."""
    reading = [item for item in items if "site" in getattr(item, "fixturenames", ())]
    if not reading:
        return
    others = [item for item in items if "site" not in getattr(item, "fixturenames", ())]
    items[:] = others + reading
    if not config.option.collectonly and not os.environ.get("COURSE_SITE_DIR"):
        _start_build()


def pytest_unconfigure(config):
    proc = _BUILD.get("proc")
    if proc is not None and proc.poll() is None:  # interrupted: do not leave a build running
        proc.kill()
        proc.wait()
    if "handle" in _BUILD:
        _BUILD["handle"].close()
    if _BUILD.get("ok"):
        shutil.rmtree(_BUILD["out"], ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if "seconds" in _BUILD:
        terminalreporter.write_line(f"site: the smoke build took {_BUILD['seconds']:.0f} s in the background, beside "
                                    f"the other tests (its own data cache); it exited with {_BUILD['proc'].returncode}")


@pytest.fixture(scope="session")
def site() -> Path:
    """The book built once per test session, every lesson executed under the smoke profile.

    ``COURSE_SITE_DIR=path/to/_build/html`` checks a site built before instead (quicker while
    working on the checks themselves; ``make test`` always builds afresh)."""
    prebuilt = os.environ.get("COURSE_SITE_DIR")
    if prebuilt:
        return Path(prebuilt)
    if "proc" not in _BUILD:  # collected in a way the hook did not see (a plugin reordering, say)
        _start_build()
    proc, out, log = _BUILD["proc"], _BUILD["out"], _BUILD["log"]
    try:
        code = proc.wait(timeout=1500)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the book did not build within 25 min (log so far: {log})") from None
    _BUILD["handle"].flush()
    if code != 0:  # the notebook's own traceback comes before Sphinx's: keep both
        output = log.read_text(encoding="utf-8")
        first = max(0, output.find("Traceback") - 2000)  # the first traceback: the failing notebook's
        raise AssertionError(f"the book did not build (whole log: {log}):\n"
                             + output[first:first + 6000] + "\n[...]\n" + output[-3000:])
    _BUILD["ok"] = True
    return out / "_build" / "html"
