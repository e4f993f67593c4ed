# The two commands of the README. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test docs bench experiments clean

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
	$(PY) -m pytest -n 2 --dist worksteal -q

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

experiments: $(STAMP)
	$(PY) experiments/consensus_rate.py --out runs/consensus_rate
	$(PY) experiments/kappa.py --out runs/kappa
	$(PY) experiments/robust_gossip.py --out runs/robust_gossip
	$(PY) experiments/byzantine_federated.py --out runs/byzantine_federated
	$(PY) experiments/network_dp.py --out runs/network_dp
	$(PY) experiments/privacy_utility.py --out runs/privacy_utility
	$(PY) experiments/trilemma.py --out runs/trilemma
	$(PY) experiments/dynamic_networks.py --out runs/dynamic_networks

clean:
	rm -rf runs .pytest_cache
