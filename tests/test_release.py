"""Releases: the version and the repository URL are set once and agree everywhere they are used."""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("release", ROOT / "scripts" / "release.py")
release = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release)


def test_pins_version_and_url_agree():
    assert release.problems() == []


def test_package_version_is_the_one_in_init():
    import course_lib
    from importlib.metadata import version

    assert course_lib.__version__ == release.version()
    assert version("course_lib") == course_lib.__version__, "reinstall: pip install -e ."


def test_colab_notebooks_install_the_release_tag():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert f'COURSE_VERSION = "{release.version()}"' in first.source, path.name
        assert f'COURSE_REPO = "{release.repo_url()}"' in first.source, path.name
        assert re.search(r"git\+\{COURSE_REPO\}@v\{COURSE_VERSION\}", first.source), path.name


def test_licences_and_citation_are_there():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "CC BY 4.0" in readme and "MIT" in readme and "CITATION.cff" in readme


def test_the_release_tag_holds_every_notebook_the_site_links_to():
    """The site's Colab links open notebooks/NN.ipynb at the tag v<version>: the tag must hold every one.

    (v0.2.0 held lessons 1-5 and 7 only, while the site built from main linked fifteen.)"""
    import subprocess

    tag = f"v{release.version()}"

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    if git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}").returncode != 0:
        pytest.skip(f"no tag {tag} in this checkout (a release being prepared, or a clone without tags)")
    listed = set(git("ls-tree", "--name-only", tag, "notebooks/").stdout.split())
    missing = [p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if f"notebooks/{p.name}" not in listed]
    assert not missing, (f"the tag {tag} lacks {missing}: their Colab links open nothing; "
                         "release the lessons with scripts/release.py X.Y.Z and tag it")
    assert f'__version__ = "{release.version()}"' in git("show", f"{tag}:course_lib/__init__.py").stdout
