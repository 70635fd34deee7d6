# The two entry points: `make demo` (train + evaluate on built-in synthetic scenes) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean-venv chromium

$(BIN)/clip2depth: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/clip2depth

demo: $(BIN)/clip2depth
	$(BIN)/clip2depth demo --out demo_out --overwrite  # a fresh demo each time

test: $(BIN)/clip2depth chromium
	$(BIN)/python -m pytest -q

# The web app's browser test drives Debian's Chromium: installed here when missing and possible (root with
# apt-get); otherwise that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "Chromium not installed: tests/app/test_app_browser.py will be skipped (apt-get install chromium as root)"

lint: $(BIN)/clip2depth
	$(BIN)/ruff check src tests benchmarks tools hubconf.py

bench: $(BIN)/clip2depth
	$(BIN)/python benchmarks/speed.py --batches 1  # add 8 for the full table (~20 min on 2 cores)

clean-venv:
	rm -rf $(VENV)
