# The two commands a newcomer needs (see README.md):
#   make demo   set everything up, then run the main job on the bundled sample clip
#   make test   set everything up, then run the test suite
# Set-up is a virtual environment in .venv; it is made once and reused.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/meshstream body --render out/body.png

test: setup
	$(BIN)/python -m pytest -q -ra

bench: setup
	$(BIN)/meshstream bench

clean:
	rm -rf $(VENV) out
