# Two commands do everything on a fresh machine (see README.md):
#   make site   set up .venv, run every lesson under the cpu profile, build _build/html
#   make test   set up .venv, run the unit tests, every lesson (smoke profile), and the site check
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: setup site test notebooks assignments bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml course_lib/__init__.py  # a new version reinstalls (its metadata)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

site: $(STAMP)
	COURSE_PROFILE=$(PROFILE) COURSE_PROGRESS=0 COURSE_WIDGETS=1 $(BIN)/jupyter-book build . -W --keep-going
	@echo "The site is in _build/html/index.html (lessons run under the $(PROFILE) profile)."

test: $(STAMP)
	$(BIN)/python -m pytest

notebooks: $(STAMP)
	$(BIN)/python scripts/export_notebooks.py

# Student notebooks (solutions replaced by stubs, checks kept) and instructor notebooks, every lesson.
assignments: $(STAMP)
	$(BIN)/python scripts/export_notebooks.py --assignments assignments

# Every lesson under $(PROFILE): wall time, peak memory, headline numbers -> bench/$(PROFILE).md.
# Fails naming the lesson that is over budget (smoke 20 s, cpu 5 min). Run it on a quiet machine.
bench: $(STAMP)
	$(BIN)/python scripts/bench.py --profile $(PROFILE)

clean:
	rm -rf _build
