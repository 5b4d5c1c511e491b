"""Files and folders: atomic writes, atomic folder replacement, and the error for a bad path.

Atomic writes: every file the project writes (audio, manifests, speakers.json,
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
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from modules.cli import BadInput


class FileError(BadInput):
    """A file or folder that cannot be used: ``path`` and ``problem``, message ``path: problem``.

    The one implementation behind :class:`modules.audio.AudioFileError` and
    :class:`modules.model_dir.ModelDirError` (subclasses that only name the kind of
    file). A :class:`~modules.cli.BadInput`: command-line tools report it in one line.

    Example
    -------
    >>> error = FileError("x.wav", "file not found")
    >>> str(error), error.path, error.problem
    ('x.wav: file not found', 'x.wav', 'file not found')
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


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


def replace_dir(src, dest) -> None:
    """Move directory ``src`` to ``dest``, replacing ``dest`` if it exists.

    The old ``dest`` is renamed aside first and restored if the final rename
    fails, so ``dest`` is always either the old or the new complete directory
    (apart from the instant between the two renames). Both must be on one file
    system (put ``src`` beside ``dest``).

    Example
    -------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "new").mkdir(); _ = (root / "new" / "a.txt").write_text("new")
    >>> (root / "dest").mkdir(); _ = (root / "dest" / "b.txt").write_text("old")
    >>> replace_dir(root / "new", root / "dest")
    >>> sorted(p.name for p in root.iterdir()), (root / "dest" / "a.txt").read_text()
    (['dest'], 'new')
    """
    src, dest = Path(src), Path(dest)
    if not dest.exists():
        os.replace(src, dest)
        return
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    os.rmdir(old)
    os.replace(dest, old)
    try:
        os.replace(src, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def new_dir_beside(dest, tag: str) -> Path:
    """A new empty folder next to ``dest`` for building it, with the normal mode.

    Unlike ``tempfile.mkdtemp`` (mode 0700), the folder gets ``mkdir``'s mode
    (0777 less the umask), so a folder renamed into place from it is readable by others.

    Example
    -------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> tmp = new_dir_beside(root / "model", "tmp")
    >>> tmp.parent == root, tmp.name.startswith(".model.tmp-"), list(tmp.iterdir())
    (True, True, [])
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = dest.parent / f".{dest.name}.{tag}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_dir(dest) -> Iterator[Path]:
    """Yield a new empty folder beside ``dest``; it replaces ``dest`` if the block succeeds.

    The folder form of :func:`atomic_path` (model directories, exports): ``dest`` is
    always the old or the new complete folder (see :func:`replace_dir`); on an exception
    the new one is removed and ``dest`` is left as it was.

    Example
    -------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "model"
    >>> with atomic_dir(dest) as tmp:
    ...     _ = (tmp / "a.txt").write_text("new")
    >>> [p.name for p in dest.iterdir()]
    ['a.txt']
    >>> with atomic_dir(dest) as tmp:
    ...     _ = (tmp / "b.txt").write_text("half")
    ...     raise RuntimeError("interrupted")
    Traceback (most recent call last):
    ...
    RuntimeError: interrupted
    >>> [p.name for p in dest.parent.iterdir()], [p.name for p in dest.iterdir()]
    (['model'], ['a.txt'])
    """
    tmp = new_dir_beside(dest, "tmp")
    try:
        yield tmp
        replace_dir(tmp, Path(dest))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
