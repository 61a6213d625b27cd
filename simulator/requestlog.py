"""The record of every request the simulator answered.

Tests assert what a client did (how many logins, how many downloads at once, whether it waited
as ``Retry-After`` asked) from this log, so it must hold every request, including the ones a
fault cut short, with monotonic start and end times that can be compared across threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace


@dataclass
class RequestRecord:
    server: str
    """"catalogue" (catalogue and identity port) or "download"."""
    method: str
    path: str
    query: str
    """The raw query string, as sent (URL-encoded or not)."""
    status: int | None = None
    """None when the connection was closed without an answer (the catalogue "hang" fault)."""
    bytes_sent: int = 0
    """Body bytes written (a dropped download shows how far it got)."""
    fault: str | None = None
    user: str | None = None
    grant_type: str | None = None
    started: float = 0.0
    finished: float = 0.0


class RequestLog:
    """A thread-safe, append-only list of records, added when a request arrives and completed in place."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        """Copies, in the order the requests arrived; one still in flight has ``finished == 0.0``."""
        with self._lock:
            return [replace(r) for r in self._records]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
