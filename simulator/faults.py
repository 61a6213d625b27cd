"""Deciding, request by request, which configured fault strikes.

Each fault kind has its own seeded random stream and counter, so adding a fault of one kind
does not change where the others strike, and ``*_first`` faults hit exactly the first N
eligible requests of their kind.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from simulator.config import Faults


@dataclass(frozen=True)
class BodyFaults:
    """What happens to one download body."""

    slow: float = 0.0  # seconds of silence before the first byte
    drop_at: int | None = None  # bytes sent before the connection is closed
    corrupt_at: int | None = None  # offset of the byte that is flipped

    def names(self) -> list[str]:
        out = []
        if self.slow:
            out.append("slow")
        if self.drop_at is not None:
            out.append("drop")
        if self.corrupt_at is not None:
            out.append("corrupt")
        return out


class FaultInjector:
    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.seed = faults.seed if faults.seed is not None else seed
        self._lock = threading.Lock()
        self._rngs: dict[str, random.Random] = {}
        self._counts: dict[str, int] = {}
        self._burst_left = 0
        self._burst_status = 0

    def _hit(self, kind: str, rate: float, first: int) -> bool:
        """Must be called with the lock held."""
        n = self._counts.get(kind, 0)
        self._counts[kind] = n + 1
        if n < first:
            return True
        if rate <= 0:
            return False
        rng = self._rngs.setdefault(kind, random.Random(f"{self.seed}:{kind}"))
        return rng.random() < rate

    def storm(self) -> bool:
        with self._lock:
            return self._hit("storm", self.faults.storm_rate, self.faults.storm_first)

    def download_error(self) -> int | None:
        """The 5xx status this download gets, or None."""
        f = self.faults
        with self._lock:
            if self._burst_left > 0:
                self._burst_left -= 1
                return self._burst_status
            if self._hit("error", f.error_rate, f.error_first):
                rng = self._rngs.setdefault("error-status", random.Random(f"{self.seed}:error-status"))
                status = rng.choice(f.error_statuses)
                if self._counts["error"] > f.error_first:  # a random hit starts a burst
                    self._burst_left = max(0, f.error_burst - 1)
                    self._burst_status = status
                return status
            return None

    def body(self, length: int) -> BodyFaults:
        f = self.faults
        with self._lock:
            slow = f.slow_seconds if self._hit("slow", f.slow_rate, f.slow_first) else 0.0
            drop = self._hit("drop", f.drop_rate, f.drop_first)
            corrupt = self._hit("corrupt", f.corrupt_rate, f.corrupt_first)
        drop_at = min(max(0, int(length * f.drop_at)), max(0, length - 1)) if drop else None
        return BodyFaults(slow, drop_at, length // 2 if corrupt and length else None)

    def catalogue(self) -> str | None:
        """"hang", "garbage", "error" or None for one catalogue search."""
        f = self.faults
        with self._lock:
            if self._hit("hang", f.catalogue_hang_rate, f.catalogue_hang_first):
                return "hang"
            if self._hit("garbage", f.catalogue_garbage_rate, f.catalogue_garbage_first):
                return "garbage"
            if self._hit("catalogue-error", f.catalogue_error_rate, f.catalogue_error_first):
                return "error"
        return None

    def identity_error(self) -> int | None:
        f = self.faults
        with self._lock:
            if self._hit("identity-error", f.identity_error_rate, f.identity_error_first):
                return f.identity_error_status
        return None
