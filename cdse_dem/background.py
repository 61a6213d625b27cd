"""Work in threads that an interrupted run never waits for, and the stop flag that interrupts it.

``concurrent.futures`` joins its worker threads when the interpreter exits, and its
``shutdown`` runs every queued item first: a stop during slow catalogue searches would
wait for all of them and their retries. These workers are daemon threads that take no new
item once ``stop`` is set, so the run ends as soon as the caller's thread returns; a request
already on the wire is simply dropped (with the process, or when it ends by itself).

A run is stopped from outside (the caller's ``threading.Event``, which the command line
sets on SIGINT/SIGTERM) and from inside (the searches are over; a fatal error stops the
downloads). :class:`Stop` gives each part of a run a flag of its own that the outer one
sets too, without ever setting the caller's event.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from cdse_dem.errors import Interrupted

T = TypeVar("T")
R = TypeVar("R")
POLL = 0.05  # seconds; how often a waiting caller looks at the stop flag (a stop ends its wait this late)
PARENT_POLL = 0.05  # seconds; how late a wait notices that the outer flag was set


class Stop:
    """A stop flag (``is_set``, ``set``, ``wait``, as ``threading.Event``) that is also set once
    ``parent`` is.

    Setting it never sets the parent: the end of the searches, or a fatal download error,
    stops that part of the run and leaves the caller's event alone. A wait ends at once when
    this flag is set, and within ``PARENT_POLL`` when the parent is.
    """

    def __init__(self, parent: threading.Event | Stop | None = None):
        self._own = threading.Event()
        self._parent = parent

    def set(self) -> None:
        self._own.set()

    def is_set(self) -> bool:
        if self._own.is_set():
            return True
        if self._parent is not None and self._parent.is_set():
            self._own.set()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        if self._parent is None:
            return self._own.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = PARENT_POLL if deadline is None else min(PARENT_POLL, deadline - time.monotonic())
            if step <= 0:
                return False
            self._own.wait(step)
        return True


def interruptible_sleep(stop: threading.Event | Stop) -> Callable[[float], None]:
    """A ``time.sleep`` for retry loops that raises Interrupted as soon as ``stop`` is set."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted("stopped while waiting to try again")

    return sleep


def call_unless_stopped(call: Callable[[], R], stop: threading.Event | Stop,
                        abandoned: Callable[[R], None] | None = None) -> R:
    """``call()`` run in a daemon thread and waited for; Interrupted when ``stop`` is set first.

    For calls that may block longer than a stop may wait (a login whose identity service hangs
    for its 30 s read timeout). A result that arrives after the caller gave up goes to
    ``abandoned`` (a login is logged out again), so nothing it opened is left behind.
    """
    answer: queue.SimpleQueue = queue.SimpleQueue()
    lock = threading.Lock()
    gave_up = False

    def target() -> None:
        try:
            value = call()
        except BaseException as exc:  # handed to the caller, never lost in a thread
            answer.put((None, exc))
            return
        with lock:
            late = gave_up
            if not late:
                answer.put((value, None))
        if late and abandoned is not None:
            abandoned(value)

    threading.Thread(target=target, name="interruptible", daemon=True).start()
    while True:
        try:
            value, exc = answer.get(timeout=PARENT_POLL)
        except queue.Empty:
            if not stop.is_set():
                continue
            with lock:
                if answer.empty():
                    gave_up = True
                    raise Interrupted("stopped while waiting for the answer") from None
            continue
        if exc is not None:
            raise exc
        return value


def answers(work: Callable[[T], R], items: Iterable[T], threads: int,
            stop: threading.Event | Stop) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """``(item, result, None)`` or ``(item, None, exception)`` for each item, as each finishes.

    At most ``threads`` items run at once. Items not started when ``stop`` is set are never
    started, and the caller stops waiting within ``POLL``; the caller sets ``stop`` when it
    leaves early (an exception).
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1

    def worker() -> None:
        while not stop.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((item, work(item), None))
            except BaseException as exc:  # handed to the caller, never lost in a thread
                done.put((item, None, exc))

    for n in range(min(threads, count)):
        threading.Thread(target=worker, name=f"search-{n}", daemon=True).start()
    for _ in range(count):
        while True:
            if stop.is_set():
                return
            try:
                yield done.get(timeout=POLL)
                break
            except queue.Empty:
                pass
