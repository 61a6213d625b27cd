"""How a run fetches each DEM: the file alone through the Nodes API, or the whole product zip.

``auto`` (the default) tries Nodes first and falls back to the zip (MD5 verified) for a
product whose Nodes transfer failed; once a few products have failed that way the Nodes API
is plainly not working for this run (withdrawn, broken, refused), and the rest of the run
goes straight to zips. Either way the log says it in one line, not one per product: the
switch when it happens, else how many products fell back, at the end of the run. ``nodes``
never falls back (a failure fails the geocell); ``zip`` never tries Nodes.
"""

import logging
import threading
from enum import StrEnum

log = logging.getLogger(__name__)

# Products whose Nodes transfer failed, after which the rest of the run uses zips (issue 15):
# one or two can be a product's own trouble; three in one run say the API itself is not usable.
FALLBACKS_BEFORE_SWITCH = 3


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

    def report(self) -> None:
        """At the end of a run: the one line about products that fell back, unless the switch said it."""
        with self._lock:
            fallbacks, switched, last = self.fallbacks, self.switched, self._last
        if fallbacks and not switched:
            log.info("%d product(s) were fetched as whole zips: the Nodes API failed for them (last: %s)",
                     fallbacks, last)
