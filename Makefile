# Two commands a user needs: `make install` (idempotent) and `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install test test-dry-run system-packages clean-venv

install: $(STAMP) system-packages

# pip <= 26.0: pip >= 26.3 refuses espnet's dependency ci_sdr.
$(STAMP): requirements.txt setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet 'pip<=26.0'
	$(VENV)/bin/python -m pip install --progress-bar off -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/python -c "import espnet, s3prl, torch; assert espnet.__version__ == '202511', espnet.__version__"
	touch $(STAMP)

# Debian packages used by the recipes; installed only when missing.
system-packages:
	@bash tools/install_system_packages.sh

test: install
	$(VENV)/bin/python -m pytest -q tests

# The narrow dry runs of every paper config through every stage (docs/dry_run.md): about 40 min on 2 cores.
test-dry-run: install
	ESPNET_DELTA_TEST_DRY_RUN=1 $(VENV)/bin/python -m pytest -q -m dry_run tests/integration

clean-venv:
	rm -rf $(VENV)
