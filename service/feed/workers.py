"""The process context of the snapshot load's workers, and starting it early.

A fork server, not fork: the load runs in a thread of a process with other threads. The server
imports the extraction code once (``PRELOAD``) and forks each worker from there.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

__all__ = ["PRELOAD", "context", "start"]

PRELOAD = ["service.core.store.bulk"]


def context() -> BaseContext:
    """The workers' context (its fork server preloads PRELOAD)."""
    found = multiprocessing.get_context("forkserver")
    found.set_forkserver_preload(PRELOAD)
    return found


def start() -> None:
    """Start the fork server now, so that its imports overlap the caller's own (the service's
    start), and the first worker of a snapshot load forks at once. Cheap: this module imports
    only multiprocessing."""
    context()
    from multiprocessing import forkserver

    forkserver.ensure_running()
