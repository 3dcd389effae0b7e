# CRC Explorer — common tasks. `make run` starts the app, `make test` runs lint + tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps.stamp

.PHONY: venv run chromium faketime test test-portability test-slow test-gpu bench lint clean

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

# Date-sensitive tests rerun under a fake clock (libfaketime); install it only if it is missing and we may (root).
faketime:
	@if ! command -v faketime >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y faketime >/dev/null 2>&1 || \
		 (apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y faketime >/dev/null 2>&1)) || \
		echo "note: could not install faketime; the date-sensitive tests will not be rerun under another date"; \
	fi

lint: venv
	$(BIN)/ruff check .

# Tests that hold on every machine and every day (docs/reliability.md): results that depend on the CPU's float
# kernels run once more with MKL's most portable kernels (what another CPU may pick), backwards (no test may rely on
# another having run first); tests that read the clock run once more on another day, in another time zone, just
# before midnight of a leap day. A missing file or node id fails (pytest exit 4), and so does an empty selection (5).
PORTABILITY_NUMERICS := tests/test_certify_reference.py tests/test_soundness_certify.py tests/test_determinism.py \
	tests/test_certify.py tests/test_row_space.py tests/test_bounds.py tests/test_hessian.py tests/test_verified_eig.py \
	tests/test_compare.py tests/test_train_resume.py
PORTABILITY_DATES := tests/test_app.py::test_picker_labels_tell_trained_models_apart tests/test_checkpoints.py \
	tests/test_cli_train.py::test_progress_bar_plain_lines_when_not_a_terminal \
	tests/test_cli_sweep.py::test_registry_and_plain_progress_lines \
	tests/test_cli_sweep.py::test_epoch_reports_give_an_eta_before_any_trial_ends
FAKE_DATE := 2028-02-29 23:58:00
FAKE_TZ   := Pacific/Kiritimati
PYTEST_ONCE_MORE := $(BIN)/python -m pytest -q -p no:cacheprovider

test-portability: venv faketime
	MKL_CBWR=COMPATIBLE CRC_TEST_ORDER=reverse $(PYTEST_ONCE_MORE) $(PORTABILITY_NUMERICS)
	@if command -v faketime >/dev/null 2>&1; then \
		echo "TZ=$(FAKE_TZ) faketime '$(FAKE_DATE)' pytest <date-sensitive tests>"; \
		TZ=$(FAKE_TZ) faketime '$(FAKE_DATE)' $(PYTEST_ONCE_MORE) $(PORTABILITY_DATES); \
	else echo "note: faketime missing; date-sensitive tests not rerun under another date"; fi

# Two pytest workers (pytest-xdist), one test file each at a time: the browser files mostly wait on their Streamlit
# server while the other worker computes. Files are handed out in collection order (--no-loadscope-reorder): xdist's
# default hands out the files with the most tests first, which left the few-test browser files (the longest) for last,
# one worker running them alone (measured, one run each, same tree: 744 s → 526 s; docs/reliability.md §6).
TEST_WORKERS ?= 2
test: venv chromium lint test-portability
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

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
