# medsyft: two set-up commands.  `make demo` runs the main job, `make test` the suite.
# Both create .venv if missing and install the pinned set (constraints.txt); the
# install step is skipped while .venv/.installed is newer than the pins. Researcher code
# runs in bubblewrap sandboxes: as root the system package is installed here, otherwise
# the command to run is printed.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: demo test lab install system clean-home help
help:
	@echo "make demo   - three simulated hospitals, the approval loop, a summary"
	@echo "make test   - the whole test suite (notebooks included)"
	@echo "make lab    - JupyterLab on notebooks/ (numbered, by role); PORT=N for another port"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"

$(STAMP): $(BIN)/python constraints.txt pyproject.toml
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Isolation needs Debian's bubblewrap (and libseccomp2, part of a base system); the
# compliance console's screenshots, browser tests and the report's PDF need Debian's
# chromium and chromium-driver (driven locally, nothing downloaded).
system:
	@missing=""; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing$$missing (sandboxes for researcher code; headless browser for the console and reports)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
			{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; \
		else \
			echo "medsyft needs Debian packages that are missing here; install them with:"; \
			echo "    sudo apt-get install -y$$missing"; \
			exit 1; \
		fi; \
	fi

install: system $(STAMP)

demo: system $(STAMP)
	$(BIN)/medsyft demo $(ARGS)

# two workers, a test file each at a time: the files share their datasites within a worker
# and much of the suite waits on servers and isolated workers, not on the CPU
WORKERS ?= 2

test: system $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile $(ARGS)

# `make lab PORT=8899` or `make lab ARGS="--port 8899"` (jupyter's own --port=N works too); any
# other ARGS go to `jupyter lab` as they are. JupyterLab (the `lab` extra) is installed once.
LAB_STAMP := $(VENV)/.lab-installed
PORT      ?=

$(LAB_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,lab]"
	touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser --LabApp.extension_manager=readonly \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(if $(PORT),--port=$(PORT),) $(subst --port ,--port=,$(ARGS))

clean-home:
	rm -rf .medsyft
