"""Data shipped inside the package, read through `importlib.resources`.

- `squad/dev-v1.1.json.zip`: the official SQuAD v1.1 development set (CC BY-SA 4.0,
  Rajpurkar et al. 2016), split by article into the train and held-out halves.
- `vocab-uncased.txt`: the uncased BERT WordPiece vocabulary (Apache-2.0), for generated models.

A wheel installed anywhere carries both, so nothing is looked up relative to a
source checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled_file(name: str) -> Path:
    """Filesystem path of a bundled data file (`squad/dev-v1.1.json.zip`, `vocab-uncased.txt`).

    The tokenizer and zipfile need real paths; a package installed as files
    (every pip install) gives one directly, so no temporary copy is made.
    """
    resource = files(__name__).joinpath(name)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"bundled data file {name!r} is missing from the installed package ({path})")
    return path


SQUAD_DEV = "squad/dev-v1.1.json.zip"
UNCASED_VOCAB = "vocab-uncased.txt"
