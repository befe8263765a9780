# Two commands for a fresh machine: `make book` and `make test`.
# Everything else (venv, data) is made on the way.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= paper
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: all venv data book test test-fast rerun bench clean clean-cache help

help:
	@echo "make book    - install, get the data, execute every chapter (CPU profile), build _build/html"
	@echo "make test    - install, get the data, run the whole test suite"
	@echo "make rerun PROFILE=paper|gpu-quick|cpu|smoke [NOTEBOOKS='00 01'] - papermill runs into runs/PROFILE/"
	@echo "make bench   - speed benchmarks (ratios against naive baselines)"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[book,test]'
	touch $@

# Fashion-MNIST: Debian's dataset-fashion-mnist when we are root on Debian, else a
# download through torchvision; then unpacked into data/FashionMNIST/raw.
data: venv
	@if ! $(BIN)/python -m rmtlib.data check fashion-mnist >/dev/null 2>&1; then \
	  if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } ; \
	  fi; \
	  $(BIN)/python -m rmtlib.data fetch fashion-mnist; \
	fi

book: data
	TQDM_DISABLE=1 $(BIN)/jupyter-book build . --builder html
	@echo "Open _build/html/index.html"

test: data
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q -ra tests

test-fast: data
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q -m "not notebooks and not slow" tests

rerun: data
	$(BIN)/python -m rmtlib.rerun --profile $(PROFILE) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS))

bench: data
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build runs

clean-cache:
	rm -rf .cache
