# aws — the two commands a user needs are `make run` and `make test` (see README.md).
SWIFT        ?= swift
CONFIG       ?= release
BIN          := .build/$(CONFIG)/aws
PORT         ?= 8888
ROOT         ?= www
APT_PACKAGES := libaio-dev libffi-dev libhttp-parser-dev pkg-config curl wget strace apache2-utils
PYTHON       ?= python3

.PHONY: all build deps plugins run unit test bench clean

all: build

# Installs the Debian packages the build and the tests need, only when one is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(PYTHON) -c "import pytest" 2>/dev/null || $(PYTHON) -m pip install -q pytest

build: deps
	$(SWIFT) build -c $(CONFIG) --product aws

# C plugins with the system compiler; Swift plugins as SwiftPM dynamic library products.
SWIFT_PLUGINS := hello
plugins: build
	@$(MAKE) -s -C Plugins
	@for p in $(SWIFT_PLUGINS); do \
	  $(SWIFT) build -c $(CONFIG) --product $$p && cp .build/$(CONFIG)/lib$$p.so Plugins/$$p.so || exit 1; \
	done

run: build plugins
	$(BIN) --root $(ROOT) --port $(PORT) --plugins Plugins

# Unit tests of the host's pure functions (Tests/HostTests): a debug build, so the release
# binary the end-to-end suite runs is left as it is. Swift Testing only: XCTest would add a
# "0 tests" report of its own.
unit: deps
	$(SWIFT) test --disable-xctest

test: unit build plugins
	AWS_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q Tests

bench: plugins
	bash bench/run.sh

clean:
	rm -rf .build Plugins/*.so Plugins/build
