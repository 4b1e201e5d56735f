# The two set-up commands of the README:  make demo  ·  make test
# Both create (or reuse) the virtualenv and install requirements.txt first (a no-op when done).
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install demo test test-oscar test-uuidshop redis check lint

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

redis:
	@scripts/ensure-redis

demo: install
	$(PYTHON) manage.py demo

test: install redis
	$(PYTHON) -m pytest --ignore=tests/integration $(PYTEST_ARGS)
	$(PYTHON) -m pytest tests/integration/oscar --ds=tests.integration.oscar.settings
	$(PYTHON) -m pytest tests/integration/uuidshop --ds=tests.integration.uuidshop.settings

# The django-oscar shop runs in a pytest session of its own (one settings module per session).
test-oscar: install redis
	$(PYTHON) -m pytest tests/integration/oscar --ds=tests.integration.oscar.settings $(PYTEST_ARGS)

# A plain shop with UUID keys and many-to-many categories, installed as the README says.
test-uuidshop: install redis
	$(PYTHON) -m pytest tests/integration/uuidshop --ds=tests.integration.uuidshop.settings $(PYTEST_ARGS)

check: install
	$(PYTHON) manage.py check
	$(PYTHON) manage.py makemigrations --check --dry-run
