# The two commands of the README: `make demo` and `make test`. Both set up a fresh machine first.
.PHONY: setup demo test lint check bench down

setup:
	./scripts/setup

demo: setup
	.venv/bin/supaworker demo

lint:
	.venv/bin/ruff check
	.venv/bin/ruff format --check
	.venv/bin/mypy

test: setup lint
	node_modules/.bin/tsc -p clients/js --noEmit
	node clients/js/scripts/sync.mjs --check
	node_modules/.bin/deno check supabase/functions/*/index.ts supabase/functions/_shared/testing_handler.ts
	node_modules/.bin/deno lint supabase/functions
	node_modules/.bin/deno test -A supabase/functions/
	.venv/bin/pytest -q
	./scripts/test-lowest

bench: setup
	.venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python bench/run_all.py

down:
	.venv/bin/supaworker dev down
