# The two commands of the README. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test docs bench experiments results clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77" wheel
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m redeem_jax --config configs/default.py --workdir runs/default

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n 2 --dist worksteal -q --durations=25

# The documentation site with the API reference generated from the docstrings, offline, failing
# on any warning (open build/site/index.html).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/round_throughput.py
	$(PY) benchmarks/robust_rules.py
	$(PY) benchmarks/federated_step.py
	$(PY) benchmarks/gossip_cost.py
	$(PY) benchmarks/dp_overhead.py
	$(PY) benchmarks/sweep.py
	$(PY) benchmarks/scale.py

# Every experiment's full run into its committed result folder, then docs/results.md's tables
# rendered again from those files (hours on 2 cores; one experiment: python experiments/<name>.py
# --out docs/results/<name>, then python experiments/regenerate.py).
EXPERIMENTS := byzantine_gossip consensus_rate heterogeneity_bias compressed_gossip dynamic_networks linear_speedup kappa robust_gossip breakdown byzantine_federated network_dp privacy_utility trilemma personalization recommendation detection lm lora_gap lm_private

experiments: $(STAMP)
	for e in $(EXPERIMENTS); do $(PY) experiments/$$e.py --out docs/results/$$e || exit 1; done
	$(PY) experiments/regenerate.py

# docs/results.md's tables from the committed result files only (seconds).
results: $(STAMP)
	$(PY) experiments/regenerate.py

clean:
	rm -rf runs .pytest_cache
