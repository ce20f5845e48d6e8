# `make demo` and `make test` each create .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint format bench readme clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,smile,onnx]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/sermodels predict --model default sermodels/assets/clips --out demo_predictions.csv

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check sermodels tests benchmarks
	$(BIN)/ruff format --check sermodels tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format sermodels tests benchmarks
	$(BIN)/ruff check --fix sermodels tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/baselines.py
	$(BIN)/python benchmarks/datamodule_cache.py
	$(BIN)/python benchmarks/emonet.py
	$(BIN)/sermodels train --config recipes/emonet/multi3.yaml
	$(BIN)/python benchmarks/emonet.py --regimes scratch --corpora emodb --loso adapters --loso-base runs/emonet_wrn.multi3
	$(BIN)/python benchmarks/emonet_speed.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/finetune_unseen.py --base runs/bench/loco/urdu --corpus urdu --per-class 60
	$(BIN)/python benchmarks/deep_spectrum.py
	$(BIN)/python benchmarks/make_readme.py

readme: $(STAMP)
	$(BIN)/python benchmarks/make_readme.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info demo_predictions.csv
