# Two commands for a fresh clone:  `make demo` (the main job)  and  `make test`.
# Both create .venv on first use. An importable torch (e.g. a user's CUDA build) is reused via
# --system-site-packages; torch==2.13.0 is installed only when torch is missing. The install includes the
# atari-gt extra (OCAtari ground truth), so numpy is 1.26 in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev,atari-gt]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) pretrain/demo.py

test: $(STAMP)
	$(PY) -m pytest -x tests

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/run_quick.py

clean:
	rm -rf $(VENV) runs data
