"""The name → product Id record of an output folder (``dict_filename_dem_id.json``).

The format is the reference tool's: one flat JSON object ``{"<DEM file name>": "<product Id>"}``,
so folders filled by either tool stay readable by both. Unlike the reference tool there is one
file per output folder (what it describes is that folder), it is rewritten atomically after
every geocell (a crash or Ctrl-C loses nothing already on disk), and a file we cannot read is
renamed aside with a warning rather than silently replaced by an empty one.

A geocell counts as complete only when it is recorded AND its file is present: extraction
renames a file into place only when whole, and the record is written after that rename.
"""

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path

from cdse_dem.errors import DemError, UsageError
from cdse_dem.fsutil import NotRegular, atomic_write_json, read_regular
from cdse_dem.paths import JSON_NAME

log = logging.getLogger(__name__)


class CacheError(DemError):
    """The name → id JSON can neither be read nor set aside."""


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in ("/", "\\", "\x00"))


class NameIdCache:
    """The ``{file name: product Id}`` record of one output folder; safe to share between threads."""

    def __init__(self, out_dir: Path, entries: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / JSON_NAME
        self._entries: dict[str, str] = dict(entries or {})
        self._lock = threading.Lock()

    @classmethod
    def load(cls, out_dir: Path) -> "NameIdCache":
        """Read the folder's JSON; a missing one is an empty record, an unusable one is set aside."""
        out_dir = Path(out_dir)
        path = out_dir / JSON_NAME
        try:
            raw = read_regular(path)  # a FIFO here would hang the run; a symlink would lead elsewhere
        except NotRegular as exc:
            raise UsageError(f"{exc}; this name is the output folder's record: move it away and run again") from None
        except FileNotFoundError:
            return cls(out_dir)
        except OSError as exc:
            return cls(out_dir, _set_aside(path, f"it cannot be read ({exc.strerror or exc})"))
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return cls(out_dir, _set_aside(path, f"it is not valid JSON ({exc})"))
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            return cls(out_dir, _set_aside(path, "it is not a flat {file name: product Id} object"))
        return cls(out_dir, data)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self) -> dict[str, str]:
        """A copy of the record."""
        with self._lock:
            return dict(self._entries)

    def product_id(self, file_name: str) -> str | None:
        with self._lock:
            return self._entries.get(file_name)

    def _file_present(self, file_name: str) -> bool:
        if not _is_plain_name(file_name):
            return False  # a hand-edited entry must not make us look outside the folder
        try:
            st = (self.out_dir / file_name).stat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def is_complete(self, file_name: str) -> bool:
        """Recorded, and present under its final name (a non-empty file): nothing to fetch."""
        with self._lock:
            recorded = file_name in self._entries
        return recorded and self._file_present(file_name)

    def record(self, file_name: str, product_id: str) -> None:
        """Remember that ``file_name`` came from ``product_id`` and rewrite the JSON at once.

        The lock covers the write too, so the file on disk always ends with the newest record.
        """
        with self._lock:
            if self._entries.get(file_name) == product_id and self.path.exists():
                return
            self._entries[file_name] = product_id
            atomic_write_json(self.path, self._entries)

    def forget_missing(self) -> list[str]:
        """Drop entries whose file is gone (deleted by the user, never finished): they are fetched again."""
        with self._lock:
            gone = sorted(name for name in self._entries if not self._file_present(name))
            if gone:
                for name in gone:
                    del self._entries[name]
                atomic_write_json(self.path, self._entries)
        if gone:
            log.info("%d file(s) recorded in %s are missing and will be downloaded again",
                     len(gone), self.path)
        return gone


def _set_aside(path: Path, why: str) -> dict[str, str]:
    """Rename an unusable JSON out of the way (kept for the user to inspect); start empty."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise CacheError(
            f"{path} is unusable ({why}) and cannot be set aside: {exc.strerror or exc}"
        ) from exc
    log.warning("%s is unusable (%s): renamed to %s, starting a new one", path, why, aside.name)
    return {}
