# The two commands of the README:
#   make demo   install what is missing, then run the default scenario
#   make test   install what is missing, then run the test suite
VENV ?= .venv
PYTHON ?= python3
APT_PACKAGES := dataset-fashion-mnist wordnet-base espeak-ng
# the report's browser test: Playwright drives Debian's chromium (no browser download)
TEST_APT_PACKAGES := chromium
BIN := $(VENV)/bin

.PHONY: demo test bench install system-packages test-system-packages clean

demo: install
	$(BIN)/tokensim run scenarios/cell_10users.yaml

test: install test-system-packages
	$(BIN)/lint-imports  # the import contracts of .importlinter
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/tokensim bench

install: system-packages $(VENV)/.installed

# Every pip install goes through constraints.txt: it pins the CPU build of torch on this disk.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

test-system-packages:
	@$(MAKE) --no-print-directory system-packages APT_PACKAGES="$(TEST_APT_PACKAGES)"

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing Debian packages:" $$missing; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

clean:
	rm -rf $(VENV) results/*/ .pytest_cache
