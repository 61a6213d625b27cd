"""How a run fetches each DEM: the file alone through the Nodes API, or the whole product zip.

``auto`` (the default) tries Nodes first and falls back to the zip (MD5 verified) for a
product whose Nodes transfer failed; once a few products have failed that way the Nodes API
is plainly not working for this run (withdrawn, broken, refused), and the rest of the run
goes straight to zips. Either way the log says it in one line, not one per product: the
switch when it happens, else how many products fell back, at the end of the run. ``nodes``
never falls back (a failure fails the geocell); ``zip`` never tries Nodes.

``auto`` also switches when Nodes is plainly the slower way here. A product costs Nodes four
listing requests, each holding one of the account's connections (CDSE is reported slow to
answer them), and saves the zip's other layers. Once a few products have come through
Nodes, their listings' seconds are set against the seconds their spared bytes would have
taken on a connection at the rate their files came; listings costing several times more than
that mean whole zips finish sooner (GLO-90 with 0.3 s per Nodes request: 1.4 s of listings to
spare 0.3 s of transfer at 20 MB/s), and the rest of the run uses them.
"""

import logging
import threading
from enum import StrEnum

log = logging.getLogger(__name__)

# Products whose Nodes transfer failed, after which the rest of the run uses zips (issue 15):
# one or two can be a product's own trouble; three in one run say the API itself is not usable.
FALLBACKS_BEFORE_SWITCH = 3
# Products fetched through Nodes before their cost is judged: one can be slow by accident, and
# every walk under way meanwhile is one more product through the slower way.
SPEED_SAMPLES = 2
# How many times the spared transfer time the listings must cost before zips are preferred:
# a wide margin, because the spared bytes also count against the account's monthly volume and
# the estimate of a whole zip's time is rough (its own time to first byte is not known).
SLOWER_BY = 3.0
LISTINGS_PER_PRODUCT = 4  # the root, the root folder, the cell folder, its DEM folder


class Transfer(StrEnum):
    AUTO = "auto"
    NODES = "nodes"
    ZIP = "zip"


class TransferChoice:
    """The run's choice, shared by the download workers."""

    def __init__(self, mode: Transfer | str = Transfer.AUTO):
        self.mode = Transfer(mode)
        self._lock = threading.Lock()
        self.fallbacks = 0
        self.switched = False
        self._last = ""
        self._samples: list[tuple[int, int, float, float]] = []  # zip bytes, DEM bytes, listing s, file s

    def use_nodes(self) -> bool:
        """Whether the next product starts with the Nodes API."""
        return self.mode is Transfer.NODES or (self.mode is Transfer.AUTO and not self.switched)

    @property
    def falls_back(self) -> bool:
        """Whether a Nodes failure sends the product to its zip (else it fails the geocell)."""
        return self.mode is Transfer.AUTO

    def node_failed(self, file_name: str, why: str) -> None:
        """One product leaves Nodes for its zip; the third switches the rest of the run to zips."""
        with self._lock:
            self.fallbacks += 1
            switch = self.fallbacks >= FALLBACKS_BEFORE_SWITCH and not self.switched
            if switch:
                self.switched = True
            self._last = why
        log.debug("%s: Nodes API failed (%s); fetching the whole zip", file_name, why)
        if switch:
            log.warning("The Nodes API failed for %d products (last: %s); the rest of the run downloads "
                        "whole zips", self.fallbacks, why)

    def node_fetched(self, zip_bytes: int | None, dem_bytes: int, listing_seconds: float,
                     file_seconds: float) -> None:
        """One product came through Nodes: after a few, judge whether whole zips are faster here."""
        if self.mode is not Transfer.AUTO or not zip_bytes:
            return
        with self._lock:
            if self.switched:
                return
            self._samples.append((zip_bytes, dem_bytes, listing_seconds, file_seconds))
            if len(self._samples) < SPEED_SAMPLES:
                return
            listing, spared = nodes_cost(self._samples)
            log.debug("Nodes: %.3f s of listings a product, %.3f s of transfer spared", listing, spared)
            if listing <= SLOWER_BY * spared:
                return
            self.switched = True
        log.info("Whole zips are faster here: the Nodes listings of a product take %.2f s, more than %g "
                     "times the %.2f s its smaller file saves; the rest of the run downloads whole zips "
                     "(--transfer nodes keeps the Nodes API)", listing, SLOWER_BY, spared)

    def report(self) -> None:
        """At the end of a run: the one line about products that fell back, unless the switch said it."""
        with self._lock:
            fallbacks, switched, last = self.fallbacks, self.switched, self._last
        if fallbacks and not switched:
            log.info("%d product(s) were fetched as whole zips: the Nodes API failed for them (last: %s)",
                     fallbacks, last)


def nodes_cost(samples: list[tuple[int, int, float, float]]) -> tuple[float, float]:
    """(seconds of listings per product, seconds of transfer its smaller file spares), on average.

    A file's request took one listing's time to its first byte, then its bytes at the
    connection's rate; the zip's extra bytes would have come at that rate too.
    """
    count = len(samples)
    listing = sum(s[2] for s in samples) / count
    first_byte = listing / LISTINGS_PER_PRODUCT  # one request's time before any byte
    streaming = sum(max(s[3] - first_byte, 1e-3) for s in samples)
    rate = sum(s[1] for s in samples) / streaming
    spared = sum(max(s[0] - s[1], 0) for s in samples) / count / rate
    return listing, spared
