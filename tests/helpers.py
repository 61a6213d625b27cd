"""Running the real command line in a separate process, as a user would."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "cdse_copernicus_dem_downloader.py"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
            stdin: str | None = None) -> Result:
    """Run ``cdse_copernicus_dem_downloader.py`` with ``args``; ``env`` adds to os.environ."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONWARNINGS", None)
    if env:
        full_env.update({k: str(v) for k, v in env.items()})
    proc = subprocess.run(
        [sys.executable, str(ENTRY), *map(str, args)],
        env=full_env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
        input=stdin if stdin is not None else "", check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
