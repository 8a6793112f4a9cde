# Two commands: `make demo` and `make test`. Both create .venv and install medlens into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install browser clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-cache-dir -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medlens run configs/demo.yaml

test: $(STAMP) browser
	$(BIN)/lint-imports --no-cache
	d=$$(mktemp -d) && $(BIN)/mkdocs build --strict --quiet --site-dir $$d && rm -rf $$d
	$(BIN)/python -m pytest -q -n 2

# Debian's chromium renders the report in tests/test_report.py; installed when missing and we are root.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "note: chromium not installed; the report screenshot test will skip"; fi; \
	fi

clean:
	rm -rf runs .pytest_cache
