# Everything a fresh machine needs: `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmbixt-installed
# Runs a command with the environment's tools (ninja, for the fused kernel's first build) on PATH.
IN_VENV := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: setup demo test test-slow bench gpu-check clean

setup: $(STAMP)

$(STAMP): requirements/runtime.txt requirements/tests.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/runtime.txt -r requirements/tests.txt
	# compat: the editable install is a path entry (a .pth line naming this folder), which Python's
	# path scan ranks above a folder named mmbixt in the working directory (a finder hook would not).
	# setuptools calls compat transitional; its successor 'strict' is a path entry too (a link tree,
	# rebuilt when files are added). The clone folder itself is covered by ./__init__.py either way.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	touch $(STAMP)

demo: setup
	$(IN_VENV) $(PY) tools/demo.py
	$(IN_VENV) $(PY) tools/demo_points.py

# Test files run side by side in TEST_WORKERS processes (pytest-xdist; one file's tests stay in
# one process, so its module fixtures are built once).
TEST_WORKERS ?= 2
PYTEST := $(IN_VENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST) -m 'not slow' tests

test-slow: setup
	$(PYTEST) -m slow tests

bench: setup
	$(IN_VENV) $(PY) tools/benchmark.py $(if $(ORIGINAL),--original $(ORIGINAL))

# On a CUDA machine: parity, AMP training, attention kernels, throughput, DDP (docs/gpu.md).
gpu-check: setup
	$(IN_VENV) $(PY) tools/gpu_check.py

clean:
	rm -rf $(VENV) work_dirs demo_output
