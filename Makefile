# CRC Explorer — common tasks. `make run` starts the app, `make test` runs lint + tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps.stamp

.PHONY: venv run chromium test test-slow test-gpu bench lint clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

run: venv
	$(BIN)/streamlit run app.py --server.headless true

# Browser tests need Chromium; install it only if it is missing and we may (root), never fail because of it.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = "0" ]; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null 2>&1 || \
		 (apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null 2>&1)) || \
		echo "note: could not install chromium; browser tests will be skipped"; \
	fi

lint: venv
	$(BIN)/ruff check .

test: venv chromium lint
	$(BIN)/python -m pytest

test-slow: venv
	$(BIN)/python -m pytest -m slow

test-gpu: venv
	$(BIN)/python -m pytest -m gpu

bench: venv
	@set -e; for f in bench/bench_*.py; do \
		[ -e "$$f" ] || { echo "no benchmarks in bench/ yet"; exit 0; }; \
		echo "== $$f"; $(BIN)/python "$$f"; \
	done

clean:
	rm -rf .pytest_cache .ruff_cache test-artifacts
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
