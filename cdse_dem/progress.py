"""The progress bar of a run: on a terminal only, and log lines printed above it, not through it."""

import sys

from cdse_dem.logs import progress_writer


def open_bar(total: int, quiet: bool):
    """A tqdm bar over ``total`` bytes, or None when stderr is not a terminal (or with -q)."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc="DEM", leave=False,
               file=sys.stderr)
    progress_writer(lambda line: tqdm.write(line, file=sys.stderr))
    return bar


def close_bar(bar) -> None:
    if bar is not None:
        bar.close()
        progress_writer(None)
