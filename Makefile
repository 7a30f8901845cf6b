# Leak-and-crash regression harness for asynchronous C servers.
#   make demo   build everything and show each bug next to its fix
#   make test   install what is missing, build, run the test suite
.DEFAULT_GOAL := help
SHELL := /bin/bash

# A Python that can import pytest: Debian's first, then whatever is on PATH.
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do \
            $$p -c 'import pytest' 2>/dev/null && { command -v $$p; break; }; done)
# None yet on a fresh machine: `make deps` installs python3-pytest for Debian's.
PY = $(or $(PYTHON),/usr/bin/python3)

# Two workers, one per core; a module that shares expensive fixtures keeps
# them on one worker (xdist_group).
PYTEST_ARGS ?= -n 2 --dist loadgroup

DEB_PACKAGES := libuv1-dev valgrind python3-pytest python3-pytest-xdist \
                python3-hypothesis pkg-config gcc make
# The real servers the suite gates (docs/real-servers.md).  Their services
# are never started: the install runs under a policy-rc.d that refuses it.
# nginx-light, or nginx where the distribution has no light flavour.
SERVER_PACKAGES := memcached redis-server mosquitto nginx-light
POLICY_RC := /usr/sbin/policy-rc.d
# The reports' tests: SARIF checked against its schema, the install into a
# venv, the page rendered by a real browser (and CJK fonts for the seeds).
REPORT_PACKAGES := python3-jsonschema python3-venv python3-setuptools python3-wheel \
                   chromium fonts-noto-cjk
# SANITIZE=address builds the AddressSanitizer+LeakSanitizer+UBSan tree
# (build/asan/), which `--detector asan` runs natively.
SANITIZE ?=
CC ?= gcc
CFLAGS ?= -g -O0 -Wall -Wextra -Werror=implicit-function-declaration
ifeq ($(SANITIZE),address)
BUILD := build/asan
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZE),)
BUILD := build
else
$(error SANITIZE=$(SANITIZE): only SANITIZE=address is supported)
endif
UV_CFLAGS = $(shell pkg-config --cflags libuv 2>/dev/null)
UV_LIBS = $(shell pkg-config --libs libuv 2>/dev/null || echo -luv)

COMMON_SRC := $(wildcard servers/common/*.c)
COMMON_HDR := $(wildcard servers/common/*.h)
# servers/NAME/NAME.c -> build/servers/NAME/NAME (single-variant servers)
SINGLE := $(foreach d,$(wildcard servers/*/),$(if $(wildcard $(d)buggy.c),,$(wildcard $(d)$(notdir $(patsubst %/,%,$(d))).c)))
SINGLE_BIN := $(patsubst servers/%.c,$(BUILD)/servers/%,$(SINGLE))
# servers/PATTERN/{buggy,fixed}.c -> build/servers/PATTERN/{buggy,fixed}
PAIR_SRC := $(wildcard servers/*/buggy.c servers/*/fixed.c)
PAIR_BIN := $(patsubst servers/%.c,$(BUILD)/servers/%,$(PAIR_SRC))
PROG_SRC := $(wildcard tests/progs/*.c)
PROG_BIN := $(patsubst tests/progs/%.c,$(BUILD)/progs/%,$(PROG_SRC))
# The bench's load generator (a libuv client), optimised: the servers are
# measured, not it.  Built with the test programs: a test runs it too.
LOAD_BIN := $(BUILD)/bench/load

.PHONY: help deps servers progs test demo clean repro bench soak

help:
	@echo "make demo    build everything and show each bug next to its fix"
	@echo "make test    install what is missing, build, run the tests"
	@echo "make deps    install the Debian packages this project needs (no service started)"
	@echo "make servers build every server under servers/ into $(BUILD)/"
	@echo "make repro P=PATTERN [V=buggy]  reproduce one bug locally"
	@echo "make bench   measure the harness, write reports/bench.md"
	@echo "make soak    the long reliability runs (minutes)"

deps:
	@installed() { dpkg-query -W -f='$${Status}\n' $$1 2>/dev/null | grep -q '^install ok installed'; }; \
	missing=$$(for p in $(DEB_PACKAGES) $(SERVER_PACKAGES) $(REPORT_PACKAGES); do \
	  installed $$p || { [ $$p = nginx-light ] && installed nginx; } || echo $$p; done | xargs); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "missing Debian packages:" $$missing; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	else echo "run: sudo apt-get update && sudo apt-get install -y" $$missing; \
	  echo "(and stop any of memcached, redis-server, mosquitto, nginx that the install started)"; \
	  exit 1; fi; \
	policy=; \
	if [ ! -e $(POLICY_RC) ]; then \
	  printf '#!/bin/sh\n# make deps: no service starts during this install\nexit 101\n' \
	    | $$SUDO tee $(POLICY_RC) >/dev/null && $$SUDO chmod 755 $(POLICY_RC) && policy=1; \
	  trap '$$SUDO rm -f $(POLICY_RC)' EXIT; fi; \
	$$SUDO apt-get update -qq || exit 1; \
	if echo " $$missing " | grep -q ' nginx-light ' && ! apt-cache show nginx-light >/dev/null 2>&1; then \
	  missing=$$(echo $$missing | sed 's/nginx-light/nginx/'); fi; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; status=$$?; \
	if [ -n "$$policy" ]; then $$SUDO rm -f $(POLICY_RC); fi; \
	for p in $$missing; do case $$p in \
	  memcached|redis-server|mosquitto) svc=$$p;; nginx|nginx-light) svc=nginx;; *) continue;; esac; \
	  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet $$svc 2>/dev/null; then \
	    echo "stopping $$svc (started by its install)"; $$SUDO systemctl stop $$svc; \
	  elif [ -x /etc/init.d/$$svc ] && $$SUDO /etc/init.d/$$svc status >/dev/null 2>&1; then \
	    echo "stopping $$svc (started by its install)"; $$SUDO /etc/init.d/$$svc stop >/dev/null; fi; \
	done; \
	exit $$status

servers: $(SINGLE_BIN) $(PAIR_BIN)
progs: $(PROG_BIN) $(LOAD_BIN)

$(BUILD)/servers/%: servers/%.c $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(UV_CFLAGS) -o $@ $< $(COMMON_SRC) $(UV_LIBS)

$(BUILD)/progs/%: tests/progs/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -w -o $@ $<

$(LOAD_BIN): bench/load.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -O2 $(UV_CFLAGS) -o $@ $< $(UV_LIBS)

test: deps
	@$(MAKE) --no-print-directory servers progs
	@$(MAKE) --no-print-directory servers SANITIZE=address
	@mkdir -p reports
	$(PY) -m pytest --junitxml=reports/junit.xml $(PYTEST_ARGS)

demo: deps
	@$(MAKE) --no-print-directory servers progs
	@$(MAKE) --no-print-directory servers SANITIZE=address
	$(PY) -m harness demo

bench: deps
	@$(MAKE) --no-print-directory servers progs
	@$(MAKE) --no-print-directory servers SANITIZE=address
	$(PY) bench/run.py

soak: deps
	@$(MAKE) --no-print-directory servers progs
	SOAK_CONNECTIONS=100000 $(PY) -m pytest tests/test_reliability.py -k native_storm -v
	DETERMINISM_REPEATS=20 $(PY) -m pytest tests/test_determinism.py -v

repro: deps
	@$(MAKE) --no-print-directory servers
	$(PY) -m harness run $(P) --variant $(or $(V),buggy) $(if $(S),--scenario $(S))

clean:
	rm -rf $(BUILD) .pytest_cache
	find reports -mindepth 1 ! -name README.md -exec rm -rf {} +
