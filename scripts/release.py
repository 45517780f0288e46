"""Make a release: one version, set once, pinned everywhere a student's notebook needs it.

    python scripts/release.py 0.3.0     bump course_lib.__version__, pin every lesson's install
                                        cell and the README's light install to v0.3.0,
                                        regenerate notebooks/, open the CHANGELOG entry (what
                                        changed in each lesson since the last tag)
    python scripts/release.py --check   exit 1 if a lesson's pin, the notebooks, CITATION.cff and
                                        the package version or the repository URL disagree

Then: review CHANGELOG.md, commit, and tag: ``git tag v0.3.0 && git push --tags``. The Colab
links of the site and the install cells of the notebooks point at that tag, so a notebook a
class opened in week 1 installs the same course_lib in week 10.

The repository URL is set once, in ``_config.yml`` (``repository.url``); the version once, in
``course_lib/__init__.py``. Everything else is written from those two.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "course_lib" / "__init__.py"
README = ROOT / "README.md"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)
REPO_LINE = re.compile(r'^COURSE_REPO = "([^"]*)"', re.M)
PIN_LINE = re.compile(r'^COURSE_VERSION = "([^"]*)"', re.M)


def repo_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def version() -> str:
    return VERSION_LINE.search(INIT.read_text()).group(1)


def _export():
    spec = importlib.util.spec_from_file_location("export_notebooks", ROOT / "scripts" / "export_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lessons() -> list[Path]:
    return sorted((ROOT / "lessons").glob("[0-9][0-9]_*.md"))


def problems() -> list[str]:
    """Everything that disagrees with the version and the URL set once."""
    want_url, want_version = repo_url(), version()
    found = []
    for path in lessons():
        text = path.read_text(encoding="utf-8")
        url, pin = REPO_LINE.search(text), PIN_LINE.search(text)
        if not url or not pin:
            found.append(f"{path.name}: the set-up cell lacks COURSE_REPO / COURSE_VERSION lines")
            continue
        if url.group(1) != want_url:
            found.append(f"{path.name}: COURSE_REPO {url.group(1)!r}, _config.yml says {want_url!r}")
        if pin.group(1) != want_version:
            found.append(f"{path.name}: COURSE_VERSION {pin.group(1)!r}, course_lib says {want_version!r}")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    if str(citation.get("version")) != want_version:
        found.append(f"CITATION.cff: version {citation.get('version')!r}, course_lib says {want_version!r}")
    if citation.get("repository-code", "").rstrip("/") != want_url:
        found.append(f"CITATION.cff: repository-code {citation.get('repository-code')!r}, _config.yml says {want_url!r}")
    if f"{want_url}@v{want_version}" not in README.read_text(encoding="utf-8"):
        found.append(f"README.md: the light install does not pin {want_url}@v{want_version}")
    if f"## v{want_version}" not in (ROOT / "CHANGELOG.md").read_text():
        found.append(f"CHANGELOG.md has no entry for v{want_version}")
    if _export().main(["--check"]) != 0:
        found.append("notebooks/ is out of date: run `make notebooks`")
    return found


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def changelog_entry(new: str) -> str:
    """What changed in each lesson since the last tag: the commits that touched it, and how much."""
    last = _git("describe", "--tags", "--abbrev=0")
    span = f"{last}..HEAD" if last else "HEAD"
    lines = [f"## v{new} — {datetime.date.today().isoformat()}", "", "### Lessons"]
    for path in lessons():
        rel = path.relative_to(ROOT).as_posix()
        subjects = _git("log", "--format=%s", span, "--", rel).splitlines()
        if not subjects:
            continue
        stat = _git("diff", "--shortstat", span.split("..")[0] if last else _git("rev-list", "--max-parents=0", "HEAD"), "--", rel)
        lines.append(f"- **{path.stem}** ({stat or 'new'}):")
        lines += [f"  - {s}" for s in subjects]
    lines += ["", "### Course", "- (what changed outside the lessons)", ""]
    return "\n".join(lines)


def release(new: str) -> None:
    if not re.fullmatch(r"\d+\.\d+\.\d+", new):
        raise SystemExit(f"a version is X.Y.Z, got {new!r}")
    old = version()
    if tuple(map(int, new.split("."))) <= tuple(map(int, old.split("."))):
        raise SystemExit(f"the new version {new} must be above the current {old}")
    INIT.write_text(VERSION_LINE.sub(f'__version__ = "{new}"', INIT.read_text()))
    url = repo_url()
    for path in lessons():
        text = REPO_LINE.sub(f'COURSE_REPO = "{url}"', path.read_text(encoding="utf-8"))
        path.write_text(PIN_LINE.sub(f'COURSE_VERSION = "{new}"', text), encoding="utf-8")
    README.write_text(re.sub(re.escape(url) + r"@v\d+\.\d+\.\d+", f"{url}@v{new}", README.read_text(encoding="utf-8")),
                      encoding="utf-8")  # the light install for students
    cff = ROOT / "CITATION.cff"
    text = re.sub(r'^version: .*$', f'version: "{new}"', cff.read_text(), flags=re.M)
    cff.write_text(re.sub(r'^date-released: .*$', f'date-released: "{datetime.date.today().isoformat()}"', text, flags=re.M))
    changelog = ROOT / "CHANGELOG.md"
    head, _, rest = changelog.read_text().partition("\n## ")
    changelog.write_text(f"{head}\n{changelog_entry(new)}\n## {rest}")
    _export().main([])
    print(f"course_lib {old} -> {new}; lessons pinned to v{new}; notebooks regenerated; CHANGELOG.md entry opened.")
    print(f"Now review CHANGELOG.md, then: git commit -am 'Release v{new}' && git tag v{new} && git push --tags")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", nargs="?", help="the new version, X.Y.Z")
    parser.add_argument("--check", action="store_true", help="check that everything agrees; change nothing")
    args = parser.parse_args(argv)
    if args.check or not args.version:
        found = problems()
        for p in found:
            print(p)
        print("release: everything agrees" if not found else f"release: {len(found)} problem(s)")
        return 1 if found else 0
    release(args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
