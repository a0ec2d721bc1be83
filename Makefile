# Mini CRM — the two commands are `make demo` and `make test` (see README.md).
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
# The first Python >= 3.12 on PATH (.python-version makes pyenv pick 3.12 inside this checkout).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 python3 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { command -v $$p; break; }; done)

.PHONY: help demo test lint typecheck fmt lock check-python messages messages-update clean backup restore
help:
	@echo "make demo   run the demo: web + Celery worker + beat on embedded PostgreSQL/Redis (unless DATABASE_URL/REDIS_URL are set)"
	@echo "make test   install dev dependencies and run ruff, mypy, the migrations check and pytest"
	@echo "make sweep  the full hostile-input sweep of every URL as every role and of every import step (about an hour)"
	@echo "make backup               pg_dump the database (DATABASE_URL, else the embedded one) into var/backups/"
	@echo "make restore FILE=<dump>  restore a backup into the database (replaces its tables)"
	@echo "make typecheck  mypy (django-stubs) on the services, the selectors and the KPI registry (part of make lint)"
	@echo "make fmt    format the code and apply ruff's fixes"
	@echo "make lock   after changing dependencies in pyproject.toml: a new uv.lock and its pip export"
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

# Dependencies come from the committed uv.lock (every package, pinned with its hashes), installed by uv:
# the one on PATH, else one bootstrapped from PyPI into the virtualenv. Where uv cannot be had, pip
# installs the lock's export (.ci/requirements-*.txt, kept in step with the lock by a test).
UV_VERSION := 0.13.9
UV = $(or $(shell command -v uv 2>/dev/null),$(VENV)/bin/uv)
DEMO_EXTRAS := --extra embedded --extra i18n
TEST_EXTRAS := $(DEMO_EXTRAS) --extra dev
export UV_LINK_MODE := copy
# Byte-compiled at install (in parallel), not by the first start's migrations one module at a time.
export UV_COMPILE_BYTECODE := 1

$(VENV)/.stamp-venv: | check-python
	@echo "[mini-crm] creating the virtualenv $(VENV) (first start only)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@command -v uv >/dev/null 2>&1 || test -x $(VENV)/bin/uv \
		|| $(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" \
		|| echo "[mini-crm] uv could not be installed from PyPI: pip installs the lock's export instead"
	@touch $@

# $(call install,<extras>,<pip fallback requirements>): uv's own lines show the progress (resolved,
# prepared, installed, one line per package); --inexact keeps what the other set added (demo after test).
define install
	@echo "[mini-crm] installing the dependencies from uv.lock into $(VENV) (first start only: a minute or so)"
	@if [ -x "$(UV)" ]; then \
		UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --inexact $(1); \
	else \
		$(PY) -m pip install --disable-pip-version-check --progress-bar off -r $(2) \
		&& $(PY) -m pip install --disable-pip-version-check --no-deps -e .; \
	fi
	@touch $@
endef

# One stamp per dependency set: reinstalled when the lock changes.
$(VENV)/.stamp-demo: pyproject.toml uv.lock | $(VENV)/.stamp-venv
	$(call install,$(DEMO_EXTRAS),.ci/requirements-demo.txt)

$(VENV)/.stamp-test: pyproject.toml uv.lock | $(VENV)/.stamp-venv
	$(call install,$(TEST_EXTRAS),.ci/requirements-test.txt)

# After changing the dependencies in pyproject.toml: a new lock and its pip export.
lock: $(VENV)/.stamp-venv
	$(UV) lock
	$(UV) export --frozen --no-emit-project --no-header $(DEMO_EXTRAS) -o .ci/requirements-demo.txt --quiet
	$(UV) export --frozen --no-emit-project --no-header $(TEST_EXTRAS) -o .ci/requirements-test.txt --quiet

messages:
	$(VENV)/bin/pybabel compile --use-fuzzy -d crm/locale -D django --statistics

# Developers: re-extract the strings (needs GNU gettext), then translate crm/locale/zh_Hans/LC_MESSAGES/*.po.
messages-update:
	$(PY) manage.py makemessages -l zh_Hans --ignore='.venv/*' --ignore='var/*' --no-obsolete

demo: $(VENV)/.stamp-demo
	@$(VENV)/bin/pybabel --quiet compile --use-fuzzy -d crm/locale -D django
	@$(PY) -m crm.ops.embedded demo --started $(STARTED)

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	@$(MAKE) --no-print-directory typecheck
	@if [ -x "$(UV)" ]; then $(UV) lock --check --quiet || { echo "uv.lock is out of date: make lock"; exit 1; }; fi

# The modules and settings are in pyproject.toml ([tool.mypy]); needs no database (crm/settings_typecheck.py).
typecheck: $(VENV)/.stamp-test
	$(VENV)/bin/mypy

# Format and fix what ruff can (the pre-commit hooks run the same checks: .pre-commit-config.yaml).
fmt: $(VENV)/.stamp-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(VENV)/.stamp-test
	@$(MAKE) --no-print-directory messages lint
	@bash .ci/browser $(PY)
	$(PY) -m crm.ops.embedded run -- bash -c '$(PY) manage.py makemigrations --check --dry-run && $(PY) -m pytest $(PYTEST_ARGS)'

# Backups (README "Backups"): crm/ops/backup.py picks pg_dump/pg_restore matching the server's version.
# Without DATABASE_URL the embedded server is started for the command.
ifdef DATABASE_URL
DB_RUN :=
else
DB_RUN := $(PY) -m crm.ops.embedded run --
endif

backup: $(VENV)/.stamp-demo
	$(DB_RUN) $(PY) -m crm.ops.backup backup

restore: $(VENV)/.stamp-demo
	@test -n "$(FILE)" || { echo "usage: make restore FILE=var/backups/<timestamp>.dump"; exit 1; }
	$(DB_RUN) $(PY) -m crm.ops.backup restore "$(FILE)"

clean:
	rm -rf $(VENV) var

# The full hostile-input sweep (tests/test_sweep.py; CI runs a seeded sample of it): prints
# "sweep: <n> requests, <n> server errors (500s), ..." and writes the findings to /tmp/sweep_findings.md.
.PHONY: sweep
sweep: $(VENV)/.stamp-test
	$(PY) -m crm.ops.embedded run -- env CRM_SWEEP=full $(PY) -m pytest tests/test_sweep.py -q $(PYTEST_ARGS)
