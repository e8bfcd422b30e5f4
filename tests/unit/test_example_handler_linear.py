"""Issue 19, fault 1: the example handler's sentence count was quadratic in its input (a
70 KB document of dots backtracked for 161 s, blocking the worker's event loop)."""

from __future__ import annotations

import subprocess
import sys

from examples.document_processing.handler import analyse
from tests.conftest import ROOT

DOTS = "." * 70_000 + "x"


def test_seventy_kilobytes_of_dots_complete() -> None:
    # In a child process, so that the quadratic version (minutes) is killed, not waited for.
    # The bound is generous: the linear version takes milliseconds, the quadratic one over a
    # minute even on an idle machine, so load cannot make this pass or fail by accident.
    code = (
        "from examples.document_processing.handler import analyse\n"
        "print(analyse('.' * 70_000 + 'x')['sentences'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_sentence_counts_are_unchanged() -> None:
    assert analyse("Hi. There! Ok?  Fine...")["sentences"] == 4
    assert analyse("Wait... what?! Yes.")["sentences"] == 3
    assert analyse("a.b. c")["sentences"] == 1  # a dot inside a word ends nothing
    assert analyse(DOTS)["sentences"] == 1  # no sentence end found: at least one
