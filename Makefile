# The two entry points: `make demo` (train + evaluate on built-in synthetic scenes) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean-venv

$(BIN)/clip2depth: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/clip2depth

demo: $(BIN)/clip2depth
	$(BIN)/clip2depth demo --out demo_out --overwrite  # a fresh demo each time

test: $(BIN)/clip2depth
	$(BIN)/python -m pytest -q

lint: $(BIN)/clip2depth
	$(BIN)/ruff check src tests benchmarks

bench: $(BIN)/clip2depth
	$(BIN)/python benchmarks/speed.py --batches 1  # add 8 for the full table (~20 min on 2 cores)

clean-venv:
	rm -rf $(VENV)
