"""How long the download loop waits before trying CDSE again.

The identity and catalogue requests are retried by urllib3 (``http.ServiceRetry``); the download
keeps a loop of its own (checksums, token refresh and cancellation need it), which backs off in
the same spirit: exponential, capped, with jitter (many workers retrying in step would hit the
4-connection quota together), and ``Retry-After`` honoured when the server sends it, up to 60 s
(both loops read it with :func:`retry_after`).
"""

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 60.0  # honour Retry-After, but never stall a run on one absurd value


def wait_for(delay: float, server_wait: float | None) -> float:
    """The backoff ``delay``, or longer when the server asked for it (``Retry-After``), capped."""
    return max(delay, min(server_wait or 0.0, MAX_RETRY_AFTER))


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; the wait before try n+1 is random in [base·2^n·(1-jitter), base·2^n], capped."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delays(self) -> Iterator[float]:
        """The waits between tries: ``attempts - 1`` of them."""
        for n in range(max(self.attempts - 1, 0)):
            ceiling = min(self.cap, self.base * (2**n))
            yield ceiling * (1 - self.jitter * self.rng.random())


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait (``Retry-After``: seconds or an HTTP date), if any."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
