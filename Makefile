# Two entry points; both set up .venv on first use (tools/setup.sh is idempotent).
.PHONY: demo test setup
setup:
	@bash tools/setup.sh
demo: setup
	.venv/bin/videolang demo --out runs/demo
test: setup
	.venv/bin/python -m pytest tests
