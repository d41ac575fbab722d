# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sono3d-installed

.PHONY: demo test chromium lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sono3d demo

test: $(STAMP) chromium
	$(PY) -m pytest -q -n 2

# Headless Chromium for the browser tests (tests/test_report_browser.py), best effort: when it is
# missing, apt-get installs it if this user may (root, or sudo without a password); otherwise the
# browser tests skip and say why. This step never fails the build.
CHROMIUM_PKGS := chromium fonts-liberation
APT_GET := env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 -o Acquire::Retries=2
SKIP_NOTE := the browser tests will skip

chromium:
	@for exe in "$$SONO3D_CHROMIUM" chromium chromium-browser google-chrome; do \
	  [ -n "$$exe" ] && command -v "$$exe" >/dev/null 2>&1 && exit 0; \
	done; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium: not found and no apt-get here: $(SKIP_NOTE)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "chromium: not found, and installing it needs root (apt-get install $(CHROMIUM_PKGS)): $(SKIP_NOTE)"; exit 0; fi; \
	echo "chromium: not found; installing it for the browser tests (apt-get install $(CHROMIUM_PKGS))"; \
	$$SUDO $(APT_GET) install --no-install-recommends $(CHROMIUM_PKGS) >/dev/null 2>&1 || \
	{ $$SUDO $(APT_GET) update >/dev/null && \
	  $$SUDO $(APT_GET) install --no-install-recommends $(CHROMIUM_PKGS) >/dev/null; } || \
	echo "chromium: apt-get could not install it: $(SKIP_NOTE)"

# The layer contract alone (make test runs it too, in tests/test_architecture.py).
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
