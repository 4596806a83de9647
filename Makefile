# napari-hybridseg: `make run` opens the demo, `make test` runs the suite headless.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed
GUI_APT := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
	libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 \
	libxcb-shape0 libxcb-cursor0 libxcb-xfixes0 libfontconfig1 libdbus-1-3

.PHONY: install run test test-qt6 lint gui-deps benchmarks clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the package metadata changed; torch is pinned first so that
# the range in setup.cfg never pulls a multi-GB CUDA build on a CPU machine.
$(STAMP): $(PY) setup.cfg pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[all]"
	@touch $(STAMP)

install: $(STAMP)
	@test -x $(VENV)/bin/napari-hybridseg

# Xvfb and Mesa GL for napari's canvas when there is no screen.
gui-deps:
	@missing=""; \
	command -v Xvfb >/dev/null || missing="yes"; \
	ldconfig -p | grep -q 'libGL.so.1 ' || missing="yes"; \
	ldconfig -p | grep -q libxkbcommon-x11 || missing="yes"; \
	ldconfig -p | grep -q libxcb-cursor || missing="yes"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Xvfb and Mesa GL for headless napari tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(GUI_APT) >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(GUI_APT) >/dev/null; }; \
	  else \
	    echo "napari tests need Xvfb and Mesa GL. Install them with:"; \
	    echo "  sudo apt-get install $(GUI_APT)"; \
	    exit 1; \
	  fi; \
	fi

test: install gui-deps
	$(PY) -m pytest -q

# The GUI tests again under PyQt6 (a second environment), for the day napari drops PyQt5.
QT6_VENV := .venv-qt6
test-qt6: gui-deps
	@test -x $(QT6_VENV)/bin/python || $(PYTHON) -m venv $(QT6_VENV)
	@$(QT6_VENV)/bin/python -c "import torch" 2>/dev/null || $(QT6_VENV)/bin/pip install -q $(TORCH_PIN)
	$(QT6_VENV)/bin/pip install -q -e ".[pyqt6,testing]"
	QT_API=pyqt6 PYTEST_QT_API=pyqt6 $(QT6_VENV)/bin/python -m pytest -q -m gui

lint: install
	$(PY) -m ruff check napari_hybridseg tests benchmarks
	$(VENV)/bin/lint-imports

run: install
	$(VENV)/bin/napari-hybridseg demo

# Every benchmark of BENCHMARKS.md; the label-efficiency runs take hours on a 2-core CPU.
benchmarks: install gui-deps
	$(PIP) install -q -e ".[benchmarks]"
	$(PY) benchmarks/cost.py
	xvfb-run -a $(PY) benchmarks/ui_lag.py
	for data in synthetic bbbc007 dsb2018 scellseg; do for budget in 10pct few; do \
	  $(PY) benchmarks/label_efficiency.py --dataset $$data --budget $$budget --seeds 0 1 2 || exit 1; \
	done; done
	$(PY) benchmarks/box_claims.py
	$(PY) benchmarks/medical.py --seeds 0 1 2
	for data in bbbc007 medical; do $(PY) benchmarks/dii_phases.py --dataset $$data || exit 1; done
	cd benchmarks && ../$(PY) summarize.py --plot label_efficiency.png

clean:
	rm -rf $(VENV) $(QT6_VENV) build *.egg-info .pytest_cache
