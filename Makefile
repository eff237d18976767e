# The two commands a newcomer needs:  make demo   (the main job)   and   make test   (the tests).
# Everything else (venv, pinned install, explicit model fetch) is done on the way.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_CONFIG ?= configs/pets09.yaml
SHARED ?= ../shared/data
PYTEST_ARGS ?=
# Where pip finds a CPU build of torch. Empty: pip's own index (PyPI's Linux x86_64 wheels of torch are CUDA
# builds of several GB; a machine with a local CPU wheel, as this project's are, needs nothing). Elsewhere:
# make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# torch and torchvision as pyproject.toml pins them (one place to change them)
TORCH_PINS = $(shell grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
# A value as one word of the recipe's shell, whatever it holds (spaces, quotes): a path such as My Videos/x.mp4
quote = '$(subst ','\'',$(1))'

.PHONY: venv models demo single test lint clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet $(TORCH_PINS) --index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

models: venv
	$(BIN)/reid-daemon models fetch --all

# The demo: a multi-camera replay. Cameras are cut from one real video (DEMO_VIDEO, with its ground truth
# DEMO_GT when there is one) by a scenario preset; each camera runs as its own worker process and they
# resolve people to global ids through an embedded Valkey. Any video: make demo DEMO_VIDEO=clip.mp4
# DEMO_FPS=25 (its real frame rate; the presets assume PETS09-S2L1's 7), DEMO_GT=clip-gt.txt to score it
# (PETS09-S2L1's ground truth is the default for PETS09-S2L1's video only).
PETS09_VIDEO = $(SHARED)/pets09-s2l1/vtest.avi
DEMO_VIDEO ?= $(PETS09_VIDEO)
# (the same path exactly: filter would compare the words of a path with spaces)
DEMO_GT ?= $(if $(and $(findstring $(PETS09_VIDEO),$(DEMO_VIDEO)),$(findstring $(DEMO_VIDEO),$(PETS09_VIDEO))),$(SHARED)/pets09-s2l1/gt/gt.txt)
DEMO_SCENARIO ?= pets09-3cam-handover
DEMO_OUT ?= runs/demo
DEMO_FPS ?=

demo: models
	@test -f $(call quote,$(DEMO_VIDEO)) || { echo "The demo replays "$(call quote,$(DEMO_VIDEO))", which is absent: the data sits beside the clone (../shared/data) or is named with make demo SHARED=/path/to/shared/data; or replay your own video with make demo DEMO_VIDEO=clip.mp4 DEMO_FPS=25 (DEMO_GT=clip-gt.txt scores it)"; exit 1; }
	$(BIN)/reid-daemon scenario build $(call quote,$(DEMO_SCENARIO)) --video $(call quote,$(DEMO_VIDEO)) $(if $(DEMO_GT),--gt $(call quote,$(DEMO_GT))) --out $(call quote,$(DEMO_OUT)) $(if $(DEMO_FPS),--fps $(call quote,$(DEMO_FPS)))
	$(BIN)/reid-daemon fleet --config $(call quote,$(DEMO_OUT)/fleet.yaml)

# One camera (configs/pets09.yaml's pets09) on the whole PETS09-S2L1 clip of SHARED, scored.
single: models
	@test -f $(call quote,$(PETS09_VIDEO)) || { echo "make single replays "$(call quote,$(PETS09_VIDEO))", which is absent: the data sits beside the clone (../shared/data) or is named with make single SHARED=/path/to/shared/data"; exit 1; }
	REID_CAMERAS__pets09__SOURCE__URI=$(call quote,$(PETS09_VIDEO)) $(BIN)/reid-daemon run --config $(call quote,$(DEMO_CONFIG))
	$(BIN)/reid-daemon eval --gt $(call quote,$(SHARED)/pets09-s2l1/gt/gt.txt) --results runs/pets09/pets09.txt

lint: venv
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/ruff format --check daemon tests benchmarks
	$(BIN)/mypy daemon

test: models lint
	REID_SHARED_DATA=$(call quote,$(SHARED)) $(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
