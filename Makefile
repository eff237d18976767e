# The two commands a newcomer needs:  make demo   (the main job)   and   make test   (the tests).
# Everything else (venv, pinned install, explicit model fetch) is done on the way.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_CONFIG ?= configs/pets09.yaml
SHARED ?= ../shared/data
PYTEST_ARGS ?=

.PHONY: venv models demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

models: venv
	$(BIN)/reid-daemon models fetch --all

demo: models
	@test -f $(SHARED)/pets09-s2l1/vtest.avi || { echo "The demo replays $(SHARED)/pets09-s2l1/vtest.avi, which is absent. Run: $(BIN)/reid-daemon run --config $(DEMO_CONFIG) --source YOUR_VIDEO"; exit 1; }
	$(BIN)/reid-daemon run --config $(DEMO_CONFIG)
	$(BIN)/reid-daemon eval --gt $(SHARED)/pets09-s2l1/gt/gt.txt --results runs/pets09/pets09.txt

lint: venv
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/mypy daemon

test: models lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
