# `make run` and `make test` set everything up on a fresh Debian machine, then run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup deps run test lint bench check clean

setup: deps $(STAMP)

deps:
	@sh .ci/system-deps

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

ADDR_FILE = $${XDG_RUNTIME_DIR:-/tmp}/busmgr-make-run.address

run: setup
	@echo "Starting busmgr session with the example jobs of services.d/ (Ctrl-C stops it all)."
	@echo "From a second terminal in this directory, try:"
	@echo "  export BUSMGR_ADDRESS=\$$(cat $(ADDR_FILE))"
	@echo "  $(VENV)/bin/busmgr list"
	@echo "  $(VENV)/bin/busmgr start getty TTY=tty1 && $(VENV)/bin/busmgr status getty"
	@echo "  $(VENV)/bin/busmgr events --follow"
	@echo "  busctl --address=\$$BUSMGR_ADDRESS call org.example.Echo /org/example/Echo org.example.Echo Echo s hello"
	@echo "  busctl --address=\$$BUSMGR_ADDRESS call org.busmgr.Manager1 /org/busmgr/Manager1 org.busmgr.Manager1 ListJobs"
	@echo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(VENV)/bin/busmgr session \
		--services-dir services.d --address-file $(ADDR_FILE)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: setup
	$(VENV)/bin/busmgr check services.d

bench: setup
	$(PY) bench/run.py --output docs/PERFORMANCE.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
