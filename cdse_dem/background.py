"""Work in threads that an interrupted run never waits for.

``concurrent.futures`` joins its worker threads when the interpreter exits, and its
``shutdown`` runs every queued item first: a Ctrl-C during slow catalogue searches would
wait for all of them and their retries. These workers are daemon threads that take no new
item once ``stop`` is set, so the run ends as soon as the main thread returns; a request
already on the wire is simply dropped with the process.
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
POLL = 0.2  # seconds; how often the main thread looks up from waiting (signals are handled between)


def answers(work: Callable[[T], R], items: Iterable[T], threads: int,
            stop: threading.Event) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """``(item, result, None)`` or ``(item, None, exception)`` for each item, as each finishes.

    At most ``threads`` items run at once. Items not started when ``stop`` is set are never
    started; the caller sets ``stop`` when it leaves early (an exception, a Ctrl-C).
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
            try:
                yield done.get(timeout=POLL)
                break
            except queue.Empty:
                if stop.is_set():
                    return
