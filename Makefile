# finetune-operator — every entry point a developer or CI needs.
#
#   make demo   install what is needed, start the dev cluster and the operator,
#               run a FineTuneJob end to end and show the result
#   make test   install what is needed and run the whole suite
#
# Heavy things are cached outside the repository, keyed by version, under one
# cache root: $FINETUNE_CACHE, else $XDG_CACHE_HOME/finetune-operator, else
# ~/.cache/finetune-operator. Under it: the Python environment (hack/venv.sh),
# the control plane binaries (hack/controlplane/build.sh), the third-party
# router CRDs (hack/thirdparty/crds.sh) and the demo's model. Every install step
# is a prerequisite here, so an install failure is reported as one, before any
# test runs. CI points FINETUNE_CACHE at an empty directory (.ci/run).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     := .venv
PY       := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/trainer-image:$(CURDIR)/hack:$(CURDIR)
export GOTOOLCHAIN := local
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=

.PHONY: help venv controlplane prometheus seaweedfs chromium thirdparty-crds crds crds-check dashboards dashboards-check rules-test lint typecheck test test-examples test-unit test-trainer test-integration \
        devcluster-up devcluster-down demo demo-rollout chart-crds bench clean

help:
	@echo "make demo            start the dev cluster + operator and run a FineTuneJob end to end"
	@echo "make test            run the whole test suite (builds what it needs first)"
	@echo "make demo-rollout    then canary the demo's model 10% -> 100%, and roll a broken build back"
	@echo "make devcluster-up   start the local control plane (.devcluster/kubeconfig)"
	@echo "make devcluster-down stop it"
	@echo "make crds            regenerate crds/ from the API models"
	@echo "make bench           run the benchmarks under benchmarks/"

# Always asks hack/venv.sh (a hash and a symlink when nothing changed): the environment is
# keyed by the requirements and lives under the cache root, so a stamp file in .venv would
# keep pointing at an old cache root's environment after FINETUNE_CACHE changed.
venv:
	@bash hack/venv.sh

controlplane:
	@bash hack/controlplane/build.sh all >/dev/null

# Debian's prometheus package: a real Prometheus for the analysis tests.
prometheus:
	@bash hack/prometheus/install.sh

# SeaweedFS (`weed`) built from its Go module: a real S3 server for the object-storage tests.
seaweedfs:
	@bash hack/seaweedfs/install.sh >/dev/null

# Debian's chromium package: the headless browser that renders `kubectl finetune report`.
chromium:
	@bash hack/chromium/install.sh

# The Gateway API, Istio and KServe CRDs the routers drive, from their Go modules.
thirdparty-crds:
	@bash hack/thirdparty/crds.sh >/dev/null

crds: venv
	$(PY) -m finetune_operator.crdgen --out crds
	@$(MAKE) --no-print-directory chart-crds

crds-check: venv
	$(PY) -m finetune_operator.crdgen --out crds --check

chart-crds:
	@mkdir -p charts/finetune-operator/crds
	@cp crds/*.yaml charts/finetune-operator/crds/
	@cp config/admission/*.yaml charts/finetune-operator/templates/

lint: venv
	$(VENV)/bin/lint-imports

# mypy over the operator package, configured in pyproject.toml ([tool.mypy]).
typecheck: venv
	$(VENV)/bin/mypy

# Grafana dashboards as code (dashboards/generate.py) -> dashboards/json/ and the chart's copy.
dashboards: venv
	$(PY) dashboards/generate.py

dashboards-check: venv
	$(PY) dashboards/generate.py --check

# The Prometheus rules: syntax, then the promtool unit test of every alert.
rules-test: prometheus
	promtool check rules config/prometheus/rules.yaml
	promtool test rules config/prometheus/rules_test.yaml

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
define run_pytest
	@set +e; $(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAILED: pytest collected no tests in $(1)"; exit 1; fi; exit $$rc
endef

test: venv controlplane prometheus seaweedfs chromium thirdparty-crds crds-check dashboards-check rules-test lint typecheck
	$(call run_pytest,tests --ignore=tests/examples)
	$(call run_pytest,tests/examples)

# Every example in examples/ applied as written; the CPU ones run to Succeeded (minutes each).
# tests/examples always runs in a pytest session of its own: its operator mounts the offline
# model hub, and two operators must not reconcile the same objects.
test-examples: export FINETUNE_ALL_EXAMPLES := 1
test-examples: venv controlplane
	$(call run_pytest,tests/examples -s)

test-unit: venv
	$(call run_pytest,tests/unit)

test-trainer: venv
	$(call run_pytest,tests/trainer)

test-integration: venv controlplane prometheus seaweedfs chromium thirdparty-crds
	$(call run_pytest,tests/integration tests/e2e)

devcluster-up: venv controlplane
	$(PY) -m devcluster up

devcluster-down: venv
	$(PY) -m devcluster down

demo: venv controlplane
	$(PY) -m devcluster.demo

# The demo's model canaried to live traffic (runs `make demo`'s FineTuneJob first when needed).
demo-rollout: venv controlplane prometheus thirdparty-crds
	$(PY) -m devcluster.demo_rollout

bench: venv controlplane prometheus thirdparty-crds
	@for b in benchmarks/*.py; do case $$b in benchmarks/gpu_*) continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	-$(PY) -m devcluster down
	rm -rf .devcluster .pytest_cache
	rm -f $(VENV)
