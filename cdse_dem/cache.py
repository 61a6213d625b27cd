"""The name → product Id record of an output folder (``dict_filename_dem_id.json``).

The format is the reference tool's: one flat JSON object ``{"<DEM file name>": "<product Id>"}``,
so folders filled by either tool stay readable by both. Unlike the reference tool there is one
file per output folder (what it describes is that folder), it is rewritten atomically after
every geocell (a crash or Ctrl-C loses nothing already on disk), and a file we cannot read is
renamed aside with a warning rather than silently replaced by an empty one.

A geocell counts as complete only when it is recorded AND its file is present: extraction
renames a file into place only when whole, and the record is written after that rename.

Several runs may fill one folder at once: every change is a read-merge-write of the file on
disk under an exclusive OS lock (``.dict_filename_dem_id.json.cdse-lock``), adding or dropping
only the entries this change is about, so no run's entries are lost whatever the interleaving.
"""

import json
import logging
import stat
import threading
from pathlib import Path

from cdse_dem import locks
from cdse_dem.errors import DemError, UsageError
from cdse_dem.fsutil import NotRegular, atomic_write_json, read_regular, set_aside
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
        out_dir = Path(out_dir)  # no lock needed to read: every writer replaces the file whole
        return cls(out_dir, _read(out_dir / JSON_NAME))

    def refresh(self) -> None:
        """Take in what other runs recorded since we read the file (the file on disk wins)."""
        data = _read(self.path, set_aside=False)
        with self._lock:
            self._entries = data

    def _change(self, change) -> None:
        """Apply ``change(entries)`` to the file on disk under the folder's lock (read-merge-write)."""
        with self._lock, locks.LockFile(locks.lock_path_for(self.out_dir, JSON_NAME)):
            entries = _read(self.path)
            if change(entries) or not self.path.exists():
                atomic_write_json(self.path, entries)
            self._entries = entries

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

        Entries other runs wrote meanwhile are kept: the file is read again under the lock.
        """
        def add(entries: dict[str, str]) -> bool:
            if entries.get(file_name) == product_id:
                return False
            entries[file_name] = product_id
            return True

        self._change(add)


def _read(path: Path, *, set_aside: bool = True) -> dict[str, str]:
    """The record in ``path``: empty when missing; an unusable one is set aside (or, without
    ``set_aside``, read as empty: a reader that holds no lock must not move the file)."""
    try:
        raw = read_regular(path)  # a FIFO here would hang the run; a symlink would lead elsewhere
    except NotRegular as exc:
        raise UsageError(f"{exc}; this name is the output folder's record: move it away and run again") from None
    except FileNotFoundError:
        return {}
    except OSError as exc:
        why = f"it cannot be read ({exc.strerror or exc})"
    else:
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = f"it is not valid JSON ({exc})"
        else:
            if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                return data
            why = "it is not a flat {file name: product Id} object"
    return _set_aside(path, why) if set_aside else {}


def _set_aside(path: Path, why: str) -> dict[str, str]:
    """Move an unusable JSON out of the way (kept for the user to inspect); start empty."""
    try:
        aside = set_aside(path, "corrupt")
    except OSError as exc:
        raise CacheError(
            f"{path} is unusable ({why}) and cannot be set aside: {exc.strerror or exc}"
        ) from exc
    log.warning("%s is unusable (%s): renamed to %s, starting a new one", path, why, aside.name)
    return {}
