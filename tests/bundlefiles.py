"""Local files to publish in artifact tests: `from bundlefiles import write_files`."""

from __future__ import annotations

from pathlib import Path


def write_files(directory: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write each bundle name's bytes to a flat file under `directory`; returns bundle name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, data in contents.items():
        files[name] = directory / name.replace("/", "__")
        files[name].write_bytes(data)
    return files
