# Two entry points: `make demo` (a real campaign on the embedded offline model) and `make test`.
# Both set up everything they need: system packages (when root), .venv with pinned packages, the model.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo
ITERATIONS ?= 10

.PHONY: demo test setup system-deps model bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# bubblewrap (default sandbox), docker.io + debootstrap (docker sandbox), chromium (dgm ui's browser tests);
# only installable as root.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	  command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	  command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else \
	  command -v bwrap >/dev/null || echo "warning: bubblewrap is missing; install it (apt-get install bubblewrap) for the default sandbox"; \
	  command -v chromium >/dev/null || echo "warning: chromium is missing; install it (apt-get install chromium) for the browser tests of dgm ui"; \
	fi

setup: system-deps $(STAMP)

model: setup
	$(BIN)/dgm model fetch

# two pytest workers (pytest-xdist), a test file per worker at a time: a file's module fixtures
# (a docker image, a Ray cluster, a browser) are made once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup model
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile

# A fresh campaign in $(DEMO)/ (or a resumed one, if it is there), then the best node and its lineage.
demo: setup model
	@test -f $(DEMO)/campaign.toml || $(BIN)/dgm init $(DEMO) --template circle_packing
	$(BIN)/dgm run $(DEMO)/campaign.toml --iterations $(ITERATIONS)
	$(BIN)/dgm status $(DEMO)/run
	$(BIN)/dgm archive lineage $(DEMO)/run best

bench: setup model
	$(BIN)/python bench/bench_iteration.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
