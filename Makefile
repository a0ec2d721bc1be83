# Mini CRM — the two commands are `make demo` and `make test` (see README.md).
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
# The first Python >= 3.12 on PATH (.python-version makes pyenv pick 3.12 inside this checkout).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 python3 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { command -v $$p; break; }; done)

.PHONY: help demo test lint check-python messages messages-update clean backup restore
help:
	@echo "make demo   run the demo: web + Celery worker + beat on embedded PostgreSQL/Redis (unless DATABASE_URL/REDIS_URL are set)"
	@echo "make test   install dev dependencies and run ruff, the migrations check and pytest"
	@echo "make sweep  the full hostile-input sweep of every URL as every role and of every import step (about an hour)"
	@echo "make backup               pg_dump the database (DATABASE_URL, else the embedded one) into var/backups/"
	@echo "make restore FILE=<dump>  restore a backup into the database (replaces its tables)"
	@echo "make clean  remove the virtualenv and var/ (embedded databases)"

check-python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "Mini CRM needs Python 3.12 or newer (Django 6). None was found on PATH."; \
		echo "Install it (e.g. 'pyenv install 3.12' or your OS package python3.12) and run make again,"; \
		echo "or name it explicitly: make demo PYTHON=/path/to/python3.12"; \
		exit 1; \
	fi

# When make began: the demo's "ready in" counts installing the dependencies too.
STARTED := $(shell date +%s.%N)

# One stamp per dependency set: reinstalled when pyproject.toml changes. pip's own lines show the progress
# (one per package), without the "already satisfied" noise of a reinstall.
$(VENV)/.stamp-demo: pyproject.toml | check-python
	@echo "[mini-crm] installing the dependencies into $(VENV) (first start only: a minute or two)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@set -o pipefail; $(PY) -m pip install --disable-pip-version-check --progress-bar off -e ".[embedded,i18n]" \
		| { grep --line-buffered -E '^(Collecting|Installing|Successfully)' || true; }
	@touch $@

$(VENV)/.stamp-test: pyproject.toml | check-python
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[embedded,i18n,dev]"
	@touch $@

messages:
	$(VENV)/bin/pybabel compile --use-fuzzy -d crm/locale -D django --statistics

# Developers: re-extract the strings (needs GNU gettext), then translate crm/locale/zh_Hans/LC_MESSAGES/*.po.
messages-update:
	$(PY) manage.py makemessages -l zh_Hans --ignore='.venv/*' --ignore='var/*' --no-obsolete

demo: $(VENV)/.stamp-demo
	@$(VENV)/bin/pybabel --quiet compile --use-fuzzy -d crm/locale -D django
	@$(PY) -m crm.embedded demo --started $(STARTED)

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.stamp-test
	@$(MAKE) --no-print-directory messages lint
	@bash .ci/browser $(PY)
	$(PY) -m crm.embedded run -- bash -c '$(PY) manage.py makemigrations --check --dry-run && $(PY) -m pytest $(PYTEST_ARGS)'

# Backups (README "Backups"): crm/backup.py picks pg_dump/pg_restore matching the server's version.
# Without DATABASE_URL the embedded server is started for the command.
ifdef DATABASE_URL
DB_RUN :=
else
DB_RUN := $(PY) -m crm.embedded run --
endif

backup: $(VENV)/.stamp-demo
	$(DB_RUN) $(PY) -m crm.backup backup

restore: $(VENV)/.stamp-demo
	@test -n "$(FILE)" || { echo "usage: make restore FILE=var/backups/<timestamp>.dump"; exit 1; }
	$(DB_RUN) $(PY) -m crm.backup restore "$(FILE)"

clean:
	rm -rf $(VENV) var

# The full hostile-input sweep (tests/test_sweep.py; CI runs a seeded sample of it): prints
# "sweep: <n> requests, <n> server errors (500s), ..." and writes the findings to /tmp/sweep_findings.md.
.PHONY: sweep
sweep: $(VENV)/.stamp-test
	$(PY) -m crm.embedded run -- env CRM_SWEEP=full $(PY) -m pytest tests/test_sweep.py -q $(PYTEST_ARGS)
