"""Taking the one DEM layer out of a product zip, safely.

Sen2Cor wants the DEM layer only (``*_DEM.tif``, or ``*_DEM.dt1`` / ``*_DEM.dt2`` for DTED),
flat in the output folder under its original base name. The member is found by its suffix,
not by a fixed path (CCM zips put a random suffix on the root folder), and never from
``PREVIEW/`` (quick looks with similar names). Nothing from a path inside the zip reaches the
file system: only a checked base name does, so a crafted zip cannot write outside the
output folder. The layer is streamed to a temporary name, its CRC and size are checked
(zipfile checks the CRC when the member has been read to its end), it is fsynced, and only
then renamed into place: a file under its final name is always whole.
"""

import logging
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from cdse_dem.errors import DemError
from cdse_dem.fsutil import atomic_writer, kind_of
from cdse_dem.geocells import geocell_of_name

log = logging.getLogger(__name__)

DEM_SUFFIXES = ("_DEM.tif", "_DEM.dt1", "_DEM.dt2")
_CHUNK = 1024 * 1024

# The largest a DEM layer can be, by resolution. The widest cell (at the equator) is 3601 × 3601
# samples at 30 m and 1201 × 1201 at 90 m; stored uncompressed as float32 that is 51.9 MB and
# 5.8 MB (DTED, 16-bit with record overhead, is about half), plus a few kB of tags. A member
# declaring more is not a DEM (a zip bomb, or a wrong product) and is refused before a byte of
# it is written: about 15 % headroom over the largest real raster.
MAX_DEM_BYTES = {30: 60_000_000, 90: 7_000_000}


class ExtractError(DemError):
    """A product zip does not hold exactly one usable DEM layer, or it is damaged."""


def _parts(member_name: str) -> list[str]:
    # Zips written on Windows may use backslashes: treat them as separators too.
    return [p for p in member_name.replace("\\", "/").split("/") if p not in ("", ".")]


def is_dem_member(member_name: str) -> bool:
    """Whether a zip member is a DEM layer: the suffix says so and it is not a quick look."""
    parts = _parts(member_name)
    if not parts or member_name.endswith(("/", "\\")):
        return False
    if any(p.upper() == "PREVIEW" for p in parts[:-1]):
        return False
    return parts[-1].lower().endswith(tuple(s.lower() for s in DEM_SUFFIXES))


def _is_unsafe(member_name: str) -> bool:
    name = member_name.replace("\\", "/")
    return (
        name.startswith("/")
        or PurePosixPath(name).is_absolute()
        or (len(name) > 1 and name[1] == ":")  # a Windows drive: C:/...
        or ".." in _parts(member_name)
        or "\x00" in name
    )


def find_dem_member(zf: zipfile.ZipFile, zip_path: Path) -> zipfile.ZipInfo:
    """The single DEM layer member of ``zf``; zero, several, or an unsafe name is an error."""
    candidates = [info for info in zf.infolist() if not info.is_dir() and is_dem_member(info.filename)]
    if not candidates:
        raise ExtractError(f"no DEM layer (*_DEM.tif, *_DEM.dt1, *_DEM.dt2) found in {zip_path}")
    if len(candidates) > 1:
        names = ", ".join(info.filename for info in candidates)
        raise ExtractError(f"several DEM layers found in {zip_path}: {names}")
    info = candidates[0]
    if _is_unsafe(info.filename):
        raise ExtractError(f"refusing the unsafe member path {info.filename!r} in {zip_path}")
    return info


def _check_member(info: zipfile.ZipInfo, base_name: str, zip_path: Path) -> None:
    """Refuse a DEM member that is not a regular file (a symlink entry would become a file
    holding the link's target path) or that inflates past what a DEM of its resolution can be."""
    mode = info.external_attr >> 16  # the Unix st_mode, when the zip was made on Unix
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        raise ExtractError(f"refusing {info.filename} in {zip_path}: {kind_of(mode)}, not a regular file")
    named = geocell_of_name(base_name)
    limit = MAX_DEM_BYTES[named[1]] if named is not None else max(MAX_DEM_BYTES.values())
    if info.file_size > limit:
        resolution = f"at {named[1]} m " if named is not None else ""
        raise ExtractError(f"refusing {info.filename} in {zip_path}: it inflates to {info.file_size:,} bytes, "
                           f"more than a DEM {resolution}can be ({limit:,})")


def extract_dem(zip_path: Path, out_dir: Path, expected_name: str | None = None) -> Path:
    """Write the DEM layer of ``zip_path`` into ``out_dir`` under its base name; return that path.

    ``expected_name`` (e.g. ``Copernicus_DSM_30_N50_00_E007_00_DEM.tif``), when given, must be
    the layer's base name: a product for another geocell or format is an error, not a file.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ExtractError(f"{zip_path} is not a readable zip file ({exc})") from exc
    except OSError as exc:
        raise ExtractError(f"cannot open {zip_path}: {exc.strerror or exc}") from exc
    with zf:
        info = find_dem_member(zf, zip_path)
        base_name = _parts(info.filename)[-1]
        if expected_name is not None and base_name != expected_name:
            raise ExtractError(f"{zip_path} holds {base_name}, not the expected {expected_name}")
        _check_member(info, base_name, zip_path)
        final = out_dir / base_name
        try:
            with atomic_writer(final) as handle, zf.open(info) as src:
                written = 0
                while True:
                    chunk = src.read(_CHUNK)  # the CRC is checked when the end is reached
                    if not chunk:
                        break
                    handle.write(chunk)
                    written += len(chunk)
                if written != info.file_size:
                    raise ExtractError(
                        f"{info.filename} in {zip_path}: {written} bytes read, {info.file_size} expected"
                    )
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ExtractError(f"{info.filename} in {zip_path} is damaged ({exc})") from exc
        except (NotImplementedError, RuntimeError) as exc:  # unsupported compression, encryption
            raise ExtractError(f"cannot extract {info.filename} from {zip_path} ({exc})") from exc
        except OSError as exc:  # a full disk is DiskFull already, a DemError that passes through
            raise ExtractError(f"cannot write {final}: {exc.strerror or exc}") from exc
    log.debug("Extracted %s from %s", base_name, zip_path)
    return final
