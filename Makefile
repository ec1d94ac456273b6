# ccm: `make run` serves routes.ccm, `make test` runs the whole suite. Both set up what they need, idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall only when the project's dependencies change. `make run` needs only what running needs; `make install`
# (and everything that tests) adds the test extras.
DEPS := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(DEPS)
RUN_STAMP := $(VENV)/.run-installed-$(DEPS)
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install install-run run test check claude-cli litellm browser-tools screenshots

install: $(STAMP)

install-run: $(RUN_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[test]'
	@rm -f $(VENV)/.installed-* $(VENV)/.run-installed-*
	@touch $@ $(RUN_STAMP)

# Quiet: one line when it installs, nothing once it has (the full install above satisfies it too).
$(RUN_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first run only)"
	@$(PIP) -e .
	@rm -f $(VENV)/.run-installed-*
	@touch $@

run: install-run
	$(VENV)/bin/ccm run routes.ccm

check: install
	$(VENV)/bin/ccm check routes.ccm

test: install claude-cli litellm browser-tools
	$(VENV)/bin/ruff check ccm tests bench
	$(VENV)/bin/mypy ccm
	$(PY) -m pytest

# The pinned Claude Code CLI for the end-to-end tests, cached outside the clone (${CCM_CACHE:-$HOME/.cache/ccm}).
claude-cli:
	@bash scripts/install-claude-cli.sh

# The pinned LiteLLM proxy, in its own venv (${CCM_CACHE:-$HOME/.cache/ccm}/litellm-venv): tests/e2e/test_litellm.py
# runs ccm in front of it, and `make bench` compares against it.
litellm:
	@bash scripts/install-litellm.sh

# Debian's chromium and axe-core (pinned, in the same cache) for the admin page's browser tests (tests/web).
browser-tools:
	@bash scripts/install-browser-tools.sh

# The admin page's screenshots in docs/ui/ (docs/ui.md shows them), retaken by its browser tests.
screenshots: install browser-tools
	CCM_SCREENSHOTS=docs/ui $(PY) -m pytest tests/web -m slow -q

# The side-by-side benchmark (by hand, not in CI): sets up claude-code-router, LiteLLM, nginx and wrk under
# ${CCM_CACHE:-$HOME/.cache/ccm}/bench, runs every workload, writes docs/benchmarks.md and bench/results/latest.json.
# One workload against one target: make bench ARGS="--only tiny --targets ccm"   (see bench/run.py)
.PHONY: bench
bench: install
	@bash bench/setup.sh $(ARGS)
	$(PY) -m bench.run $(ARGS)
