"""SIGTERM / SIGINT handling: the first signal asks for a graceful stop, the second forces it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop(graceful: Callable[[], None], force: Callable[[], None]) -> Iterator[None]:
    """Install loop signal handlers for the duration of the block, then restore the defaults.

    Does nothing off the main thread (embedding in another program or a test runner)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    received = 0

    def handle(signum: int) -> None:
        nonlocal received
        received += 1
        (graceful if received == 1 else force)()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
