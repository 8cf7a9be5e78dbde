# The few commands people type. `make test` works on a fresh machine: it builds the venv, installs the
# project with pinned versions, starts the local services when the environment names none, and runs pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install test lint demo docs services-up services-down clean

$(BIN)/ibkr-workers: pyproject.toml ibkr_sim/pyproject.toml constraints.txt requirements/dev.lock requirements/build.lock
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 14), "Python 3.11-3.13 required (ib_insync fails on 3.14)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Every dependency and the build backend from the hashed locks (scripts/lock writes them), then the two
	# distributions of this repository, editable and without dependencies: the workers and the sim gateway
	# (ibkr_sim/, `ibkr-sim`). No build isolation, which would fetch a backend unchecked.
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/build.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . -e ./ibkr_sim
	$(BIN)/python -m pip check
	touch $(BIN)/ibkr-workers

install: $(BIN)/ibkr-workers

test: install
	scripts/test $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check workers ibkr_sim tests bench
	$(BIN)/mypy --strict workers ibkr_sim
	scripts/dead-code

demo: install
	scripts/demo

# The generated reference pages (tests fail when a committed one differs from its source).
docs: install
	$(BIN)/python -m workers.docs_gen events > docs/events.md
	$(BIN)/python -m workers.docs_gen settings > docs/settings.md

services-up:
	scripts/dev-services up

services-down:
	scripts/dev-services down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Offline checks of the deployment files: helm lint --strict, helm template | kubernetes-validate, hadolint,
# compose files. The first run builds helm with `go install` (a few minutes); later runs take seconds.
HELM_VERSION ?= v3.21.4
KUBE_VERSIONS ?= 1.28.0 1.30.0 1.33.0

.PHONY: helm-check
helm-check:
	HELM_VERSION=$(HELM_VERSION) KUBE_VERSIONS="$(KUBE_VERSIONS)" scripts/helm-check
