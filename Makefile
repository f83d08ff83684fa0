# xenweb: `make run` serves the appliance, `make test` runs every test.
# Both install what is missing first (scripts/bootstrap.sh, fast when all is there).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:

export XENWEB_DATA_DIR ?= ./var
export PORT ?= 8000
export PYTHONUNBUFFERED := 1

VENV := .venv
PY := $(VENV)/bin/python
TEST_DATABASE_URL := postgres://postgres@127.0.0.1:5432/test
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k guests -x"
PYTEST_ARGS ?=

# Runs pytest with $(1) before it (an env prefix); exit code 5 (no test collected) is
# reported but is not an error.
define pytest
	$(1) $(PY) -m pytest --durations=20 $(PYTEST_ARGS) || { rc=$$?; \
		if [[ $$rc -eq 5 ]]; then echo "pytest: no test was collected"; else exit $$rc; fi; }
endef

.PHONY: help deps run test test-xen test-appliance lint bench clean lab xenlab screenshots appliance

help:
	@echo "make run    installs what is missing, starts everything, serves http://127.0.0.1:$(PORT)"
	@echo "make test   installs what is missing, runs lint and every test"
	@echo "            (again on PostgreSQL when CI=true or TEST_POSTGRES=1)"
	@echo "make test-xen  runs tests/xen: two real Xen 4.17 dom0s booted under QEMU (root)"
	@echo "make xenlab [XEN=N]  starts N (default 1) real Xen 4.17 dom0s under QEMU, enrolled"
	@echo "make test-appliance  boots the appliance image under QEMU and uses it over HTTPS (root)"
	@echo "make appliance  builds var/appliance/xenweb-appliance-<version>.img (raw) and .qcow2:"
	@echo "            Debian 12 + Xen 4.17 + xenweb, bootable (root; cached in ~/.cache/xenweb)"
	@echo "make screenshots  runs the browser suite (tests/e2e), saving the main pages to docs/screenshots/"
	@echo "make lint   ruff check"
	@echo "make bench  runs bench/run.py"
	@echo "make deps   installs what is missing (system packages, .venv, node_modules, static/vendor)"
	@echo "make clean  removes .venv, node_modules and static/vendor (keeps $(XENWEB_DATA_DIR))"

deps:
	@bash scripts/bootstrap.sh

run: deps
	@bash scripts/ensure-redis.sh
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py first_boot
	exec $(VENV)/bin/honcho start -f Procfile -p $(PORT)

test: deps lint
	@bash scripts/ensure-redis.sh
	@echo "== pytest on SQLite"
	$(call pytest,env -u DATABASE_URL)
	@if [[ "$${CI:-}" == true || "$${TEST_POSTGRES:-}" == 1 ]]; then \
		bash scripts/ensure-postgres.sh; \
		echo "== pytest on PostgreSQL (tests that boot lab hosts, Xen dom0s or a browser run on SQLite only: their subject is the hypervisor or the page)"; \
		$(call pytest,env DATABASE_URL=$(TEST_DATABASE_URL) PYTEST_ADDOPTS="--ignore=tests/xen -m 'not hypervisor'"); \
	fi

# tests/xen only, with the two-host tests (two Xen dom0s under QEMU/TCG, booted in parallel;
# a few minutes; the dom0 image is cached in ~/.cache/xenweb or $$XENWEB_CACHE_DIR).
# `make test` runs them as well where the machine can (XENWEB_TEST_XEN=0 turns them off);
# XENWEB_TEST_XEN_PAIR=0 leaves the second dom0 out.
test-xen: deps
	@bash scripts/ensure-redis.sh
	env -u DATABASE_URL XENWEB_TEST_XEN=1 $(PY) -m pytest $(PYTEST_ARGS) tests/xen

# tests/appliance only, booting the appliance image under QEMU/TCG (root; builds the image
# first if it is not cached). `make test` runs it as well where the machine can
# (XENWEB_TEST_APPLIANCE=0 turns it off).
test-appliance: deps
	@bash scripts/ensure-redis.sh
	env -u DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS) tests/appliance

# The browser suite with screenshots of the main pages (needs the lab: root, namespaces).
screenshots: deps
	@bash scripts/ensure-redis.sh
	env -u DATABASE_URL XENWEB_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots \
		$(PY) -m pytest $(PYTEST_ARGS) tests/e2e

lint: deps
	$(VENV)/bin/ruff check .

bench: deps
	@bash scripts/ensure-redis.sh
	$(PY) bench/run.py

lab: deps
	$(PY) manage.py migrate --noinput
	$(PY) -m lab up --register

XEN ?= 1
xenlab: deps
	$(PY) manage.py migrate --noinput
	$(PY) -m lab up --xen $(XEN) --register

# The bootable appliance image (Debian 12, Xen 4.17, xenweb by deploy/install.sh --image).
appliance: deps
	$(PY) -m lab.appliance build

clean:
	rm -rf $(VENV) node_modules static/vendor
