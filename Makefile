# The documented commands. Each target sets up .venv first (cheap when nothing changed).
.PHONY: setup test test-all demo bench clean-outputs

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest

# Also the tests marked slow.
test-all: setup
	.venv/bin/python -m pytest -m "not benchmark"

demo: setup
	.venv/bin/wgsy demo

bench: setup
	.venv/bin/python -m pytest -m benchmark -s

clean-outputs:
	rm -rf outputs
