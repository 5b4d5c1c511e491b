"""Atomic text writes (manifests, speakers.json, mixing_params.yaml, evaluation summaries).

Example
-------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
>>> atomic_write_text(path, "hi")
>>> path.read_text()
'hi'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text: str) -> None:
    """Write a text file through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and an interrupted write leaves
    the previous file (or none) in place.

    Arguments
    ---------
    path : str or Path
        Destination (its folder is created if needed).
    text : str
        Content, written as UTF-8 without newline translation.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.csv"
    >>> atomic_write_text(path, "ID,duration\\n")
    >>> path.read_text()
    'ID,duration\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; make it readable like a normal file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
