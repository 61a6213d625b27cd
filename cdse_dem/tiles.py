"""Sentinel-2 tile ids: their syntax, and which of them really exist.

The MGRS arithmetic accepts ids that are not tiles of the Sentinel-2 grid (``01XEP``): which
ids exist is a fact of ESA's tiling KML, not of the arithmetic. That fact is shipped here as
a bitmap over zone × band × column × row (576,000 bits, 56,686 set), zlib-compressed into a
few kilobytes under ``cdse_dem/data/`` and rebuilt from the KML by
``scripts/build_tile_ids.py``. Loading it costs a millisecond and no heavy import, so the
command line can reject a wrong id before anything else happens.
"""

import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from cdse_dem.errors import InputError

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
