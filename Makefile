# llmc: `make demo` runs the main job on the bundled model; `make test` runs the default suite,
# `make test-full` every case of every test matrix (docs/testing.md).
VENV ?= .venv
WORKERS ?= logical
PY := $(VENV)/bin/python
LLMC := $(VENV)/bin/llmc

.PHONY: setup bench-setup demo test test-full test-runtime lint clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(VENV)/.installed

# llama-cpp-python (built from source for this CPU), for benchmarks/llamacpp_decode.py
bench-setup: setup
	$(PY) -m pip install -q -e ".[bench]"

demo: setup
	$(LLMC) show llmc-tiny
	$(LLMC) opt llmc-tiny -p "quantize{bits=4,group=128,method=gptq}" -o build/llmc-tiny-w4.llmc --force
	$(LLMC) eval build/llmc-tiny-w4.llmc --windows 40
	$(LLMC) run build/llmc-tiny-w4.llmc --prompt "A hacker is" --max-new-tokens 32
	$(LLMC) compile build/llmc-tiny-w4.llmc --board u280 -o build/llmc-tiny-u280 --force
	$(LLMC) csim build/llmc-tiny-u280 --prompt "A hacker is" --max-new-tokens 16

test: setup
	$(PY) -m pytest -q -n $(WORKERS) -m "not slow and not gpu" tests

# The full TVM, RTL, LUT-kernel, ONNX and family matrices, the deployed runtime's venvs, and the GPU
# tests where there is a GPU (they skip without one).
test-full: setup
	$(PY) -m pytest -q -n $(WORKERS) tests

# The deployed runtime in venvs of its own (NumPy < 2 and pynq, built once from PyPI into build/runtime-venv).
test-runtime: setup
	$(PY) -m pytest -q -m slow tests/deploy/test_runtime_venv.py

lint: setup
	$(VENV)/bin/ruff check llmc tests benchmarks scripts

clean:
	rm -rf build .pytest_cache
