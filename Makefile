# Namazu — every target installs what it needs (Debian packages, venv) and is re-runnable.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEBIAN_PACKAGES := python3-venv mosquitto mosquitto-clients influxdb influxdb-client chromium nginx-light openssl prometheus postgresql
STAMP_APT := $(VENV)/.apt-done
STAMP_PY := $(VENV)/.py-done
PYTEST_ARGS ?=

.PHONY: demo test lint bench chaos cluster fuzz setup apt venv clean format constraints

setup: $(STAMP_APT) $(STAMP_PY)

$(STAMP_APT): Makefile
	@mkdir -p $(VENV)
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

# Every Python package at the version pinned in constraints.txt, so figures reproduce.
$(STAMP_PY): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[server,test]'
	@touch $@

# Refresh the pins: resolve pyproject.toml afresh in a throw-away venv, freeze it.
constraints:
	rm -rf build/constraints-venv && python3 -m venv build/constraints-venv
	build/constraints-venv/bin/pip install -q --upgrade pip
	build/constraints-venv/bin/pip install -q '.[server,test]'
	{ echo "# Pinned versions of every dependency (make constraints); installed with pip -c."; \
	  build/constraints-venv/bin/pip freeze --exclude namazu; } > constraints.txt
	rm -rf build/constraints-venv

demo: setup
	$(VENV)/bin/namazu demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m bench.run_all

chaos: setup
	$(PY) -m tests.chaos.run

# Every tier as separate hosts (network namespaces, needs root), hosts killed and cut off.
cluster: setup
	$(PY) -m tests.cluster.run

# A longer hunt than `make test`: fresh random examples, 20x as many (about 3 minutes).
fuzz: setup
	NAMAZU_HYPOTHESIS_PROFILE=default NAMAZU_HYPOTHESIS_SCALE=$${NAMAZU_HYPOTHESIS_SCALE:-20} \
	  $(VENV)/bin/pytest -q tests/analytics/test_rule.py tests/server/test_payload.py \
	  tests/server/web/test_openapi.py tests/system/test_fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info
