"""What a run will do, decided from the command line and the configuration file.

The precedence is the reference tool's, kept exactly because scripts rely on it:
``--config`` (bare: ``configuration/configuration.xml``) wins over every other data
option; ``--t`` wins over ``--i``; with neither, ``configuration/input_tiles.txt`` is read
(the reference tool announced that but never did it). ``--reset`` is handled before all
of this by the entry script.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cdse_dem import paths
from cdse_dem.sen2cor import Coverage

if TYPE_CHECKING:  # the configuration module loads only when --config is used
    from cdse_dem.config import ConfigFile

COLLECTIONS = ("CCM", "COP-DEM")
# CCM's nine deliveries, each a full set of cells; the newest is the default.
DELIVERIES = ("2019_1", "2019_2", "2020_1", "2020_2", "2021_1", "2021_2", "2022_1", "2023_1", "2024_1")
RESOLUTIONS = (30, 90)
MODELS = ("DGED", "DTED")
COVERAGES = tuple(c.value for c in Coverage)  # --coverage: which geocells a tile gets (plain strings for argparse)

DEFAULT_COLLECTION = "CCM"
DEFAULT_DELIVERY = "2024_1"
DEFAULT_RESOLUTION = 90
DEFAULT_MODEL = "DGED"
DEFAULT_COVERAGE = Coverage.SEN2COR.value  # what Sen2Cor asks for: anything less may leave it on flat terrain

# CDSE lets an account download over 4 connections at once; more workers only get 429s back.
CDSE_CONNECTION_LIMIT = 4
# Above this --workers is refused: each worker holds a thread, a pooled connection and a 1 MiB
# buffer, and 16 is already four times what CDSE serves at once (room for a raised quota).
MAX_WORKERS = 16

# The data options that --config overrides (dest names of the argparse namespace).
DATA_OPTIONS = {"collection": "--collection", "delivery": "--delivery", "resolution": "--r",
                "model": "--m", "output": "--o", "input": "--i", "tile": "--t"}


@dataclass(frozen=True)
class Settings:
    """The data side of a run: which DEM, for which tiles, into which folder."""

    origin: str  # "Command Line" or "Configuration File"
    collection: str
    delivery: str
    resolution: int
    model: str
    output_dir: Path
    tile_args: tuple[str, ...]  # from --t, in order
    tiles_file: Path | None  # read when tile_args is empty
    ignored: tuple[str, ...] = ()  # options given but overridden by --config


def decide(args, config: "ConfigFile | None") -> Settings:
    """Settings from the parsed arguments, and from ``config`` when --config was given."""
    if config is not None:
        ignored = tuple(flag for dest, flag in DATA_OPTIONS.items() if getattr(args, dest, None))
        return Settings(
            origin="Configuration File",
            collection=config.collection or DEFAULT_COLLECTION,
            delivery=config.delivery or DEFAULT_DELIVERY,
            resolution=config.resolution or DEFAULT_RESOLUTION,
            model=config.model or DEFAULT_MODEL,
            output_dir=config.output_dir or paths.default_output_dir(),
            tile_args=(),
            tiles_file=config.tiles_file or paths.default_tiles_file(),
            ignored=ignored,
        )
    tile_args = tuple(args.tile or ())
    return Settings(
        origin="Command Line",
        collection=args.collection or DEFAULT_COLLECTION,
        delivery=args.delivery or DEFAULT_DELIVERY,
        resolution=args.resolution or DEFAULT_RESOLUTION,
        model=args.model or DEFAULT_MODEL,
        output_dir=paths.expand_user(args.output, "output folder") if args.output else paths.default_output_dir(),
        tile_args=tile_args,
        tiles_file=None if tile_args else (paths.expand_user(args.input, "tile list file") if args.input
                                           else paths.default_tiles_file()),
        ignored=("--i",) if tile_args and args.input else (),
    )
