"""The contract suite covers every SQL function `supaworker.rpc` can call."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import get_args

from supaworker import rpc
from tests.contract.conftest import rpc_functions


def covered() -> set[str]:
    """Every RPC named by an `@covers` of a test in this folder."""
    names: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        module = importlib.import_module(f"tests.contract.{path.stem}")
        for test in vars(module).values():
            names |= getattr(test, "__rpc_covers__", frozenset())
    return names


def test_every_rpc_has_a_contract_test() -> None:
    missing = rpc_functions() - covered()
    assert not missing, f"no contract test covers {sorted(missing)}: add one with @covers"


def test_the_rpc_catalogue_lists_exactly_its_functions() -> None:
    """`rpc.RpcName` and the functions building calls name the same SQL functions, so the
    enumeration above sees every RPC (a new name without a function, or the reverse, fails)."""
    assert set(get_args(rpc.RpcName)) == rpc_functions()
