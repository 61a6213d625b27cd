"""Sentinel-2 tile ids, SAFE product names and the tile lists users give.

Sentinel-2 tile ids: their syntax, and which of them really exist.

The MGRS arithmetic accepts ids that are not tiles of the Sentinel-2 grid (``01XEP``): which
ids exist is a fact of ESA's tiling KML, not of the arithmetic. That fact is shipped here as
a bitmap over zone × band × column × row (576,000 bits, 56,686 set), zlib-compressed into a
few kilobytes under ``cdse_dem/data/`` and rebuilt from the KML by
``scripts/build_tile_ids.py``. Loading it costs a millisecond and no heavy import, so the
command line can reject a wrong id before anything else happens.

What the user asked for: tile ids and SAFE names, from the command line or a list file.

The reference tool silently re-queried the previous tile for a bad or blank line; here
every entry is checked on its own, every invalid one is reported with its file and line,
and the valid ones still run.
"""

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cdse_dem.errors import InputError
from cdse_dem.fsutil import read_input, text_of

log = logging.getLogger(__name__)

ZONES = range(1, 61)
BANDS = "CDEFGHJKLMNPQRSTUVWX"  # 8° latitude bands, I and O skipped
COLUMNS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # 100 km column letters over all three sets
ROWS = "ABCDEFGHJKLMNPQRSTUV"  # 100 km row letters

TILE_IDS_FILE = Path(__file__).resolve().parent / "data" / "s2_tile_ids.bin"

_MAGIC = b"S2TILEIDS1\n"
_HEADER = struct.Struct(">I")  # number of tiles, checked against the bitmap on load
_BITS = len(ZONES) * len(BANDS) * len(COLUMNS) * len(ROWS)

_TILE_RE = re.compile(
    r"T?(?P<zone>0[1-9]|[1-5][0-9]|60)(?P<band>[C-HJ-NP-X])(?P<col>[A-HJ-NP-Z])(?P<row>[A-HJ-NP-V])"
)


def normalize_tile_id(text: str) -> str | None:
    """``' t32uma '`` → ``'32UMA'``; None when ``text`` does not have the shape of an MGRS S2 id.

    A leading ``T`` is accepted because SAFE names and many users write tiles that way.
    """
    match = _TILE_RE.fullmatch(text.strip().upper())
    return None if match is None else match.group(0).removeprefix("T")


def tile_bit(tile_id: str) -> int:
    """The position of a normalized tile id in the existence bitmap."""
    zone = int(tile_id[:2])
    band, col, row = tile_id[2], tile_id[3], tile_id[4]
    return (((zone - 1) * len(BANDS) + BANDS.index(band)) * len(COLUMNS) + COLUMNS.index(col)) * len(
        ROWS
    ) + ROWS.index(row)


def _tile_of_bit(bit: int) -> str:
    rest, row = divmod(bit, len(ROWS))
    rest, col = divmod(rest, len(COLUMNS))
    zone, band = divmod(rest, len(BANDS))
    return f"{zone + 1:02d}{BANDS[band]}{COLUMNS[col]}{ROWS[row]}"


def pack_tile_ids(tile_ids: Iterable[str]) -> bytes:
    """The shipped file's bytes for a set of tile ids (deterministic: same set, same bytes)."""
    bitmap = bytearray(_BITS // 8)
    count = 0
    for text in tile_ids:
        tile = normalize_tile_id(text)
        if tile is None:
            raise ValueError(f"{text!r} is not a Sentinel-2 tile id")
        bit = tile_bit(tile)
        if not bitmap[bit >> 3] & (0x80 >> (bit & 7)):
            count += 1
            bitmap[bit >> 3] |= 0x80 >> (bit & 7)
    return _MAGIC + _HEADER.pack(count) + zlib.compress(bytes(bitmap), 9)


def unpack_tile_ids(data: bytes) -> bytes:
    """The bitmap inside the shipped file's bytes; ValueError when they are not such a file."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a tile id list (bad magic)")
    (count,) = _HEADER.unpack_from(data, len(_MAGIC))
    try:
        bitmap = zlib.decompress(data[len(_MAGIC) + _HEADER.size :])
    except zlib.error as exc:
        raise ValueError(f"tile id list is damaged ({exc})") from exc
    if len(bitmap) != _BITS // 8 or int.from_bytes(bitmap, "big").bit_count() != count:
        raise ValueError("tile id list is damaged (size or count mismatch)")
    return bitmap


@lru_cache(maxsize=1)
def _bitmap() -> bytes:
    return unpack_tile_ids(TILE_IDS_FILE.read_bytes())


def is_sentinel2_tile(tile_id: str) -> bool:
    """True when ``tile_id`` (any accepted spelling) is one of the 56,686 tiles of the grid."""
    tile = normalize_tile_id(tile_id)
    return tile is not None and _exists(tile)


def _exists(tile: str) -> bool:
    bit = tile_bit(tile)
    return bool(_bitmap()[bit >> 3] & (0x80 >> (bit & 7)))


def check_tile(tile_id: str) -> str:
    """The normalized id (``'32UMA'``); InputError unless ``tile_id`` names a real Sentinel-2 tile."""
    tile = normalize_tile_id(tile_id)
    if tile is None:
        raise InputError(f"'{tile_id}' is not a Sentinel-2 tile id")
    if not _exists(tile):
        raise InputError(f"'{tile_id}' is not a Sentinel-2 tile")
    return tile


def all_tile_ids() -> Iterator[str]:
    """Every tile of the grid, in zone, band, column, row order."""
    bitmap = _bitmap()
    for byte_index, byte in enumerate(bitmap):
        if byte:
            for offset in range(8):
                if byte & (0x80 >> offset):
                    yield _tile_of_bit(byte_index * 8 + offset)


COMMAND_LINE = "command line"

# Characters of an entry quoted in a message: enough for any SAFE name (65) and a path before
# it; a whole 10 MB line would drown the log and the terminal.
MAX_SHOWN = 120
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# Compact L1C/L2A product names (since December 2016): S2x_MSIL1C_..._T<tile>_... The tile is
# the one _T<tile>_ field, wherever it stands, so a future extra field does not break the
# lookup; a name with two tile fields is ambiguous and refused.
_SAFE_RE = re.compile(r"^S2[A-D]_MSI(L1C|L2A)(_[0-9A-Z]+)+$")
_TILE_FIELD = re.compile(r"^T(\d\d[A-Z]{3})$")
_SAFE_SUFFIXES = (".ZIP", ".SAFE")


@dataclass(frozen=True)
class Entry:
    """One requested item, as written, where it was written, and what it resolved to."""

    text: str
    source: str  # COMMAND_LINE or the list file's path
    line: int | None
    tile: str | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    @property
    def message(self) -> str:
        """The one-line report of an invalid entry: ``file:line: '<entry>' ...``."""
        return f"{self.where}: {self.error}"


def tile_of(text: str) -> str:
    """The Sentinel-2 tile an entry names, or InputError saying why it names none."""
    candidate = text.strip().upper()
    tile = normalize_tile_id(candidate) or _tile_of_safe_name(candidate)
    if tile is None:
        raise InputError(f"'{shown(text)}' is not a Sentinel-2 tile id or SAFE name")
    check_tile(tile)
    return tile


def shown(text: str) -> str:
    """An entry as a message may print it: stripped, every unprintable character escaped (a
    terminal escape sequence is shown, not obeyed; a byte that is not UTF-8 as ``\\xff``), and cut
    past MAX_SHOWN characters with the full length said."""
    text = text.strip()

    def escape(char: str) -> str:
        if char.isprintable():
            return char
        if 0xDC80 <= ord(char) <= 0xDCFF:  # an undecodable byte, as Python hands over argv
            return f"\\x{ord(char) - 0xDC00:02x}"
        return char.encode("unicode_escape").decode("ascii")

    escaped = "".join(map(escape, text[:MAX_SHOWN]))
    return escaped if len(text) <= MAX_SHOWN else f"{escaped}… ({len(text):,} characters)"


def _is_utf16(raw: bytes) -> bool:
    """UTF-16 text (what Windows editors call "Unicode"): a byte-order mark, or every other byte NUL."""
    if raw.startswith(_UTF16_BOMS):
        return True
    head = raw[:4096]
    return len(head) >= 4 and any(not any(half) and all(other)
                                  for half, other in ((head[1::2], head[0::2]), (head[0::2], head[1::2])))


def _product_base(name: str) -> str:
    """``.../S2A_MSIL1C_..._T32UMA_....SAFE.ZIP`` → ``S2A_MSIL1C_..._T32UMA_...`` (upper case in, as out)."""
    base = re.split(r"[/\\]", name.rstrip("/\\"))[-1]
    stripped = True
    while stripped:
        stripped = False
        for suffix in _SAFE_SUFFIXES:
            if base.endswith(suffix):
                base, stripped = base[: -len(suffix)], True
    return base


def _tile_of_safe_name(name: str) -> str | None:
    base = _product_base(name)
    if not _SAFE_RE.match(base):
        return None
    fields = [m.group(1) for m in map(_TILE_FIELD.match, base.split("_")[2:]) if m]
    return normalize_tile_id(fields[0]) if len(fields) == 1 else None


def resolve(text: str, source: str, line: int | None) -> Entry:
    try:
        return Entry(text, source, line, tile=tile_of(text))
    except InputError as exc:
        return Entry(text, source, line, error=str(exc))


def from_command_line(values: list[str]) -> list[Entry]:
    return [resolve(value, COMMAND_LINE, None) for value in values]


# The most a tile list may hold: a million SAFE names (65 bytes a line) is 65 MB; every tile of the
# grid as a SAFE name is under 4 MB.
MAX_TILE_LIST_BYTES = 128 * 1024 * 1024


def read_tile_list(path: Path) -> list[Entry]:
    """Entries of a list file: one a line, ``#`` starts a comment, blank lines skipped.

    A file that cannot serve as a list at all (missing, a folder, binary, empty) is an
    InputError; a bad line is an invalid Entry, reported with the rest.
    """
    raw = read_input(path, "tile list file", InputError, limit=MAX_TILE_LIST_BYTES)
    if _is_utf16(raw):
        raise InputError(f"{path}: a UTF-16 text file, not UTF-8: convert it, e.g. "
                         f"iconv -f UTF-16 -t UTF-8 '{path}' > tiles.txt (or save it as UTF-8)")
    text = text_of(raw, path, InputError)
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):  # as editors and grep number lines: \n only
        content = line.split("#", 1)[0].strip()
        if content:
            entries.append(resolve(content, str(path), number))
    if not entries:
        raise InputError(f"{path}: holds no tile id or SAFE name")
    return entries


def read_product_folder(folder: Path) -> list[Entry]:
    """Entries of a folder of products: the names of its ``*.SAFE``, ``*.SAFE.zip`` and ``*.zip`` entries.

    One level deep, names only (nothing is opened), sorted, as if listed in a file. An entry
    whose name is not a Sentinel-2 product name (``photos.zip``, a README, a sub-folder) is
    none of the user's products: it is counted in one log line, not reported as an error; a
    product name whose tile does not exist is an invalid entry, as in a list file. A folder with
    no product at all is an InputError.
    """
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError as exc:
        raise InputError(f"{folder}: cannot read the folder of products ({exc.strerror or exc})") from None
    entries = []
    for name in names:
        upper = name.upper()
        if upper.endswith(_SAFE_SUFFIXES) and _SAFE_RE.match(_product_base(upper)):
            entries.append(resolve(name, str(folder), None))
    others = len(names) - len(entries)
    others_text = f"{others} other {'entry' if others == 1 else 'entries'}"
    kinds = "*.SAFE, *.SAFE.zip or *.zip named S2x_MSIL1C_... or S2x_MSIL2A_..."
    if not entries:
        raise InputError(f"{folder}: holds no Sentinel-2 product ({kinds}); {others_text}")
    log.info("Reading products from %s: %d product(s); %s ignored (not %s)", folder, len(entries), others_text, kinds)
    return entries


def unique_tiles(entries: list[Entry]) -> list[Entry]:
    """The valid entries, one per tile, in the order first asked for."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry.tile and entry.tile not in seen:
            seen.add(entry.tile)
            kept.append(entry)
    return kept
