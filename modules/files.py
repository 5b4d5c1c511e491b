"""Atomic writes: every file the project writes (audio, manifests, speakers.json,
mixing_params.yaml, evaluation summaries, release archives) goes through
:func:`atomic_path`, so a reader never sees a half-written file and the file gets
the normal mode of a new file (``0666`` less the umask, like ``open``), not the
``0600`` of ``tempfile.mkstemp``.

Example
-------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
>>> atomic_write_text(path, "hi")
>>> path.read_text()
'hi'
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a new empty temporary file beside ``path``; rename it to ``path`` on success.

    The temporary file is created with ``open``'s mode (``0666`` less the umask), so the
    final file is as readable as any other new file. On an exception it is removed and
    ``path`` is left as it was. The folder is created if needed.

    Example
    -------
    >>> import tempfile, pathlib, stat
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> with atomic_path(path) as tmp:
    ...     _ = tmp.write_bytes(b"ok")
    >>> path.read_bytes(), stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    (b'ok', True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)
