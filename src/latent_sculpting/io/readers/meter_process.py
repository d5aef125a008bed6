"""The processes nfstream meters in, seen from the program that iterates it: a Ctrl-C noted,
the CPU affinity nfstream narrows given back, and meters left running ended.

Kept apart from :mod:`latent_sculpting.io.readers.pcap` (what a capture's flows are) because
these are about processes and signals, which ``sculpt watch`` also needs when it stops a live
capture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["interrupt_guard", "kept_affinity", "stop_meters"]


@contextlib.contextmanager
def interrupt_guard() -> Iterator[threading.Event]:
    """Note a Ctrl-C during metering (and raise it as usual)."""
    seen = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: object) -> None:
        seen.set()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def kept_affinity() -> Iterator[Callable[[], None]]:
    """Undo nfstream's pinning of the calling process to CPU 0 (and its sibling).

    nfstream sets the CPU affinity of the process that iterates it, which would leave the rest
    of the program (model scoring after reading a capture) on one core pair. ``restore`` is
    called before each batch is handed out and on exit.
    """
    if not hasattr(os, "sched_getaffinity"):
        yield lambda: None
        return
    kept = os.sched_getaffinity(0)

    def restore() -> None:
        if os.sched_getaffinity(0) != kept:
            os.sched_setaffinity(0, kept)

    try:
        yield restore
    finally:
        restore()


def stop_meters(before: set) -> None:
    """End the metering processes nfstream started that still run.

    A consumer that stops early leaves them blocked on a full queue; they are daemons, so only
    a long-lived program would notice. multiprocessing forgets a process's target once started,
    so ours are the children born since metering began (``before``: the children then).

    SIGTERM first, SIGKILL if that does not end one: a meter forked while the parent had a
    Python handler for SIGTERM (``sculpt watch`` stops on it) inherits the handler and lives
    on, and the interpreter's exit then waited for it forever.
    """
    import multiprocessing

    for child in multiprocessing.active_children():
        if child not in before and child.daemon:
            child.terminate()
            child.join(timeout=2)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
