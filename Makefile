# The two commands of the README: `make demo` and `make test`. Both set up a fresh machine first.
.PHONY: setup demo test lint check bench down
# The edge functions' sources (with their tests) are in the package; this repository's
# supabase/ folder is a project initialised by `supaworker init`, with the Deno settings.
DENO_CONFIG = supabase/functions/deno.json

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
	.venv/bin/supaworker init --check   # supabase/ holds what the package carries
	node_modules/.bin/deno check --config $(DENO_CONFIG) supaworker/supabase_functions/*/index.ts supaworker/supabase_functions/_supaworker/testing_handler.ts
	node_modules/.bin/deno lint --config $(DENO_CONFIG) supaworker/supabase_functions
	node_modules/.bin/deno test -A --config $(DENO_CONFIG) supaworker/supabase_functions/
	.venv/bin/pytest -q
	./scripts/test-lowest

bench: setup
	.venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python bench/run_all.py

down:
	.venv/bin/supaworker dev down
