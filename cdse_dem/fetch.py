"""Fetching the planned geocells: parallel, verified, recorded one by one.

Each worker takes one geocell at a time: download (verified as bytes arrive), extract the
DEM layer into place, record it in the JSON. So at any moment, a crash or Ctrl-C leaves
only whole files under final names, each recorded. Past the time budget no new geocell
starts; those left are reported for the next run.
"""

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from cdse_dem.errors import AccessDenied, BudgetExhausted, DemError
from cdse_dem.fsutil import DiskFull
from cdse_dem.plan import DOWNLOADED, FAILED, CellState

log = logging.getLogger(__name__)


@dataclass
class FetchOutcome:
    left: list[str] = field(default_factory=list)  # not started: the budget ran out
    fatal: DemError | None = None  # stopped everything (e.g. no CCM access)
    bytes: int = 0


def fetch_all(cells: list[CellState], *, session, http, endpoints, out_dir: Path, cache, workers: int,
              stop: threading.Event, progress=None) -> FetchOutcome:
    from cdse_dem.download import download_product
    from cdse_dem.extract import extract_dem

    outcome = FetchOutcome()
    lock = threading.Lock()
    counter = iter(range(1, len(cells) + 1))

    def stop_all(state: CellState, exc: DemError) -> None:
        """Errors no other geocell can escape (no CCM access, a full disk) end the whole run."""
        with lock:
            outcome.fatal = outcome.fatal or exc
        stop.set()
        state.status, state.error = FAILED, str(exc)

    def one(state: CellState) -> None:
        if stop.is_set():
            return
        if not session.may_start():
            with lock:
                outcome.left.append(state.file_name)
            return
        with lock:
            number = next(counter)
        product = state.product
        log.info("Processing file n %d: %s", number, state.file_name)
        try:
            result = download_product(product, out_dir, session, http, endpoints,
                                      on_bytes=progress.update if progress else None, stop=stop)
        except BudgetExhausted:
            with lock:
                outcome.left.append(state.file_name)
            return
        except (AccessDenied, DiskFull) as exc:
            stop_all(state, exc)
            return
        except DemError as exc:
            if stop.is_set():
                return
            state.status, state.error = FAILED, str(exc)
            log.error("%s: %s", state.file_name, exc)
            return
        log.info("File %s downloaded", product.id)
        try:
            path = extract_dem(result.zip_path, out_dir, expected_name=state.file_name)
            cache.record(state.file_name, product.id)
        except DiskFull as exc:
            stop_all(state, exc)
            return
        except DemError as exc:
            state.status, state.error = FAILED, str(exc)
            log.error("%s: %s", state.file_name, exc)
            return
        finally:
            result.zip_path.unlink(missing_ok=True)
        state.status, state.file, state.bytes = DOWNLOADED, str(path), result.bytes
        with lock:
            outcome.bytes += result.bytes
        log.info("DEM %s extracted and stored", path.name)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
    pending = {pool.submit(one, state) for state in cells}
    try:
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a bug in a worker surfaces here, not silently
    except BaseException:
        stop.set()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    return outcome
