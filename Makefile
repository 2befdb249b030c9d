# Everything a fresh clone needs: `make run`, `make test`, `make bench`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
IMAGERY := $(VENV)/bin/imagery
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 7860

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test bench lint system-deps clean

# torch is pinned to 2.13.0 in pyproject.toml: on a CPU machine pip takes the local CPU wheel,
# and no looser requirement can drag in the CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,ray,postgres]'
	touch $(STAMP)

# Browser tests need Debian's Chromium; PostgreSQL tests need initdb/pg_ctl. Installed with apt
# when missing (as root, or through sudo), never downloaded by a test tool.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(STAMP)
	$(IMAGERY) ui --host $(HOST) --port $(PORT)

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

# Each prints a ratio against a reference measured in the same run (see each script's docstring).
bench: $(STAMP) system-deps
	$(PY) bench/cppn_render.py
	$(PY) bench/cppn_kernel.py
	$(PY) bench/fork.py
	$(PY) bench/history.py
	$(PY) bench/genome_ids.py
	$(PY) bench/sparks.py
	$(PY) bench/heap.py
	$(PY) bench/batch_run.py
	$(PY) bench/diffusion.py
	$(PY) bench/previews.py
	$(PY) bench/ui_latency.py --agent-rounds 20
	$(PY) bench/steering.py
	$(PY) bench/agent_cost.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
