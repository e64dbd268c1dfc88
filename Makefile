# make test   : .venv with the package and its test extra (FFI built: CPU always, CUDA when nvcc is
#               found), then the whole CPU test suite.
# make bench  : the benchmark on what this machine has (GPU if any, else small CPU shapes).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The exact versions the GPU machine runs; pyproject.toml declares the supported range.
JAX_PINS := jax==0.11.2 jaxlib==0.11.2
BUILD_DEPS := "scikit-build-core>=0.10" "cmake>=3.24" ninja
PYTEST_ARGS ?=
# pytest-xdist workers: the interpret-mode kernel tests are CPU-bound (2 cores: 14.5 -> 9.3 min).
TEST_WORKERS ?= 2

.PHONY: test bench install gpu-check clean

$(PY):
	@python=$$(scripts/find-python) || exit 1; \
	echo "creating $(VENV) with $$python"; \
	"$$python" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q $(BUILD_DEPS) $(JAX_PINS)
	@command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || echo "note: nvcc not found: building the CPU handlers only"
	PATH="$$PATH:/usr/local/cuda/bin" $(PY) -m pip install -q --no-build-isolation ".[test,bench]" $(JAX_PINS)

test: install
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: install
	PYTHONUNBUFFERED=1 $(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
