# Two commands for a fresh machine: `make book` and `make test`.
# Everything else (venv, data, MathJax, the browser for the tests) is made on the way.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= paper
MATHJAX_VERSION ?= 3.2.2
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: all venv data mathjax browser book smoke-book lab test test-fast mutation rerun bench clean clean-cache help

help:
	@echo "make book       - install, get the data, execute every chapter (CPU profile), build _build/html (strict)"
	@echo "make test       - install (with headless Chromium), run the whole test suite, including the"
	@echo "                  smoke-profile book opened page by page in a real browser"
	@echo "make smoke-book - only build the smoke-profile book into _build/smoke/_build/html"
	@echo "make lab        - open the notebooks in JupyterLab"
	@echo "make rerun PROFILE=paper|gpu-quick|cpu|smoke [NOTEBOOKS='00 01'] - papermill runs into runs/PROFILE/"
	@echo "make bench      - speed benchmarks (ratios against naive baselines)"
	@echo "make mutation [MODULES='porter_thomas spectra'] [SAMPLE=40] [SURVIVORS=1] - mutation testing of the core"
	@echo "                  modules against their fast tests (mutmut; hours on 2 cores; TESTING.md)"

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

# MathJax 3 served by the book itself (math renders with no network): the npm package,
# unpacked into _vendor/mathjax/, which _config.yml hands to Sphinx as a static path.
mathjax: _vendor/mathjax/tex-chtml.js

_vendor/mathjax/tex-chtml.js:
	@if ! command -v npm >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends npm; \
	  else echo "npm is needed to fetch MathJax (Debian: apt-get install npm)"; exit 1; fi; \
	fi
	mkdir -p .cache/npm
	cd .cache/npm && test -f mathjax-$(MATHJAX_VERSION).tgz || npm pack --silent mathjax@$(MATHJAX_VERSION)
	rm -rf _vendor/mathjax && mkdir -p _vendor/mathjax
	tar xzf .cache/npm/mathjax-$(MATHJAX_VERSION).tgz -C _vendor/mathjax --strip-components=2 package/es5
	test -f $@ && touch $@

# Headless Chromium and its driver for the browser test (Debian packages, as root).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	  else echo "chromium/chromedriver missing and not root on Debian: the browser test will be skipped"; fi; \
	fi

# Strict: every Sphinx warning fails the build; --keep-going reports all of them first.
book: data mathjax
	TQDM_DISABLE=1 $(BIN)/jupyter-book build . --builder html -W --keep-going
	@echo "Open _build/html/index.html"

smoke-book: data mathjax
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python tools/smoke_book.py

lab: data
	@test -x $(BIN)/jupyter-lab || $(BIN)/python -m pip install -q -c constraints.txt jupyterlab
	$(BIN)/jupyter-lab notebooks/

# tests/test_book_browser.py builds the smoke-profile book (tools/smoke_book.py) and opens
# every page of _toc.yml in headless Chromium.
test: data mathjax browser
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q -ra tests

test-fast: data
	TQDM_DISABLE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q -m "not notebooks and not slow" tests

# Mutation testing (issue 17, TESTING.md): mutmut mutates one core module at a time and runs
# its fast tests (never part of `make test`); niced, two workers. SAMPLE=n tests a seeded sample;
# SURVIVORS=1 reruns only the last whole run's survivors (after adding tests; see TESTING.md).
MODULES ?=
SAMPLE  ?= 0
SURVIVORS ?=
mutation: data
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[mutation]'
	TQDM_DISABLE=1 MPLBACKEND=Agg nice -n 15 $(BIN)/python tools/mutation.py $(MODULES) --max-children 2 --sample $(SAMPLE) $(if $(SURVIVORS),--survivors)

rerun: data
	$(BIN)/python -m rmtlib.rerun --profile $(PROFILE) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS))

bench: data
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build runs

clean-cache:
	rm -rf .cache
