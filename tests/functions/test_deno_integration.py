"""The Deno integration tests (`supaworker/supabase_functions/*/*integration_test.ts`,
supabase-js) run against the test stack, with two fresh users: the functions', and the
supaworker client's (`_supaworker/client_integration_test.ts`, which also needs the service
role key)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import pytest

from supaworker_local import tools
from supaworker_local.config import StackConfig
from tests.conftest import ROOT, StackUser

pytestmark = pytest.mark.stack

INTEGRATION_TESTS = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "supaworker" / "supabase_functions").glob("*/*integration_test.ts")
)

# The sources' tests run with the project's Deno configuration (nodeModulesDir none: this
# repository's package.json must not turn npm: imports into node_modules look-ups).
DENO_CONFIG = "supabase/functions/deno.json"


@pytest.mark.timeout(600)
def test_deno_integration_tests_pass(
    functions_ready: StackConfig, make_user: Callable[..., StackUser]
) -> None:
    assert INTEGRATION_TESTS, "no integration_test.ts found"
    env = {
        **os.environ,
        "SUPABASE_URL": functions_ready.api_url,
        "SUPABASE_ANON_KEY": functions_ready.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": functions_ready.service_role_key,
        "SUPAWORKER_TEST_USER_TOKEN": make_user().token,
        "SUPAWORKER_TEST_OTHER_USER_TOKEN": make_user().token,
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [tools.deno(), "test", "-A", "--config", DENO_CONFIG, *INTEGRATION_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(r"ok \| (\d+) passed \| 0 failed(?: \| (\d+) ignored)?", output)
    assert summary, output
    assert int(summary.group(1)) > 0
    assert summary.group(2) in (None, "0"), "integration tests were skipped:\n" + output
