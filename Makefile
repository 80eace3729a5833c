# The two commands a user needs are `make demo` and `make test`; both set everything up first
# (virtualenv, Python packages, Kafka broker jars from Maven Central).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup jars demo test test-fast bench-ingress bench-dispatch bench-faust-hop bench-normalise bench-sink clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,report]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP)

jars: setup
	$(VENV)/bin/wapipe stack jars

demo: jars
	$(VENV)/bin/wapipe demo

# lint-imports first: the layer contracts in pyproject.toml ([tool.importlinter]); a broken one fails the target.
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# TEST_WORKERS pytest processes (pytest-xdist), each with its own broker: the suite mostly waits
# on brokers, workers and timers (~25 % of 2 cores in one process), so 3 run it in ~40 % of the time.
TEST_WORKERS ?= 3
test: jars
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -ra --durations=15 -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests ran: failing"; exit 1; fi; exit $$rc

test-fast: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench-ingress: jars
	@$(PY) -c "import fastapi" 2>/dev/null || $(PY) -m pip install -q -e '.[test,report,bench]'
	$(PY) bench/ingress.py $(BENCH_ARGS)

bench-dispatch: jars
	$(PY) bench/dispatch.py

bench-faust-hop: jars
	$(PY) bench/faust_hop.py

bench-normalise: jars
	$(PY) bench/normalise.py

bench-sink: jars
	$(PY) bench/sink.py

clean:
	$(VENV)/bin/wapipe stack down || true
	rm -rf .wapipe
