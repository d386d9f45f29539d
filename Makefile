# The two commands: `make demo` and `make test`. Everything else is a helper they call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := prometheus chromium

.PHONY: demo test lint fmt typecheck pytest bench soak proto dashboards sysdeps clean

# setuptools builds the C extensions (collector/decode/_als_wire.c, _otlp_wire.c) with the machine's gcc.
$(STAMP): requirements.lock tests/requirements.lock pyproject.toml collector/decode/_als_wire.c collector/decode/_otlp_wire.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools==84.2.1
	$(BIN)/python -m pip install -q -r requirements.lock -r tests/requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# System packages the tests drive for real (Prometheus, headless Chromium). Installed with
# apt-get when missing and we are root; otherwise the tests that need them say what is missing.
sysdeps:
	@missing=""; for p in prometheus promtool chromium; do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else echo "missing:$$missing (run as root or: sudo apt-get install $(APT_PACKAGES))"; fi; fi

demo: $(STAMP)
	$(BIN)/meshlens demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: $(STAMP) sysdeps lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m pip install -q -r bench/requirements.lock
	$(BIN)/python -m bench.run_all

soak: $(STAMP)
	MESHLENS_SOAK=1 $(BIN)/pytest -m slow tests/soak $(PYTEST_ARGS)

proto: $(STAMP)
	$(BIN)/python -m meshlens.collector.proto.generate

dashboards: $(STAMP)
	$(BIN)/meshlens grafana build

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
