#!/usr/bin/env python3
"""Download a released model directory, verify it and unpack it.

::

    python download_model.py --name spexplus-libri2mix-16k          # listed in models.json
    python download_model.py --url URL --sha256 HEX [--dest DIR]    # any archive
    python download_model.py --list
    python download_model.py --pack MODEL_DIR [--out NAME.tar.gz]  # make a release archive

A release is a ``.tar.gz`` of a model directory (``inference.yaml``,
``model.ckpt``, optionally ``train_hparams.yaml`` and ``metrics.json``, either
at the top of the archive or in one top-level folder). ``models.json`` (next
to this script) maps a name to its ``url``, ``sha256`` and ``size`` in bytes.

The download goes to ``.<dest>.<sha>.tar.gz.part`` beside the destination. A
broken transfer is retried (``--retries``) and continued where it stopped with
an HTTP ``Range`` request; a server that ignores ``Range`` makes it start again
from zero. Running the command again after a failure also resumes. Only an
archive with the expected size and SHA-256 is unpacked, into a temporary
folder that is renamed to ``--dest`` at the end: a failed or interrupted run
never leaves a half-written model directory.

``--pack`` refuses an ``--out`` inside the packed directory (it would replace
a model file, or pack itself). A rejected archive (bad checksum, not a model
directory) is deleted, never left as a ``.part`` file.

Exit status (every command-line tool of the project): 0 done (or already
present), 2 bad input or usage (unknown name, model not published yet,
checksum or size mismatch, bad archive, destination in the way, bad option), 1
failure (network error, disk full or permission denied, a bug). The message is
one line ``download_model.py: error: ...``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from modules.cli import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    ArgumentParser,
    entry_point,
    is_inside,
)
from modules.files import atomic_path, new_dir_beside, replace_dir

logger = logging.getLogger("download_model")

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_MANIFEST = REPO_ROOT / "models.json"
DEFAULT_ROOT = REPO_ROOT / "pretrained_models"
REQUIRED_FILES = ("inference.yaml", "model.ckpt")
STAMP_FILE = ".download.json"
BLOCK = 1 << 16

# The exit status of each kind of failure (see the module docstring).
EXIT_REQUEST = EXIT_CHECKSUM = EXIT_BAD_INPUT
EXIT_NETWORK = EXIT_DISK = EXIT_FAILURE


class DownloadError(Exception):
    """A failure with a message for the user and an exit status."""

    def __init__(self, message: str, status: int = EXIT_REQUEST):
        super().__init__(message)
        self.status = status


def _disk_error(error: OSError, path: Path) -> DownloadError:
    """Turn a file-system error into a clear DownloadError."""
    if error.errno == errno.ENOSPC:
        return DownloadError(f"disk full while writing {path}: free some space", EXIT_DISK)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(f"permission denied: cannot write {path}", EXIT_DISK)
    return DownloadError(f"cannot write {path}: {error.strerror or error}", EXIT_DISK)


# --------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------


def load_manifest(path=DEFAULT_MANIFEST) -> dict:
    """``{name: {"url", "sha256", "size", ...}}`` from a models.json file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DownloadError(f"{path}: model list not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise DownloadError(f"{path}: cannot read the model list ({error})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise DownloadError(f'{path}: expected {{"models": {{NAME: {{"url", "sha256", "size"}}}}}}')
    return models


def is_placeholder(entry: dict) -> bool:
    """Whether a manifest entry has no published archive yet."""
    url, digest = entry.get("url"), entry.get("sha256")
    return (
        not url
        or not digest
        or not re.fullmatch(r"[0-9a-fA-F]{64}", str(digest))
        or "placeholder" in str(url).lower()
    )


def resolve(name=None, url=None, sha256=None, manifest_path=DEFAULT_MANIFEST) -> dict:
    """The ``name``, ``url``, ``sha256`` and ``size`` (or None) to download."""
    if name is not None:
        models = load_manifest(manifest_path)
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise DownloadError(f"unknown model '{name}' (models in {manifest_path}: {known})")
        entry = models[name]
        if is_placeholder(entry):
            raise DownloadError(
                f"model '{name}' is listed in {Path(manifest_path).name} but not published yet "
                "(no url/sha256): train one with recipes/LibriMix-TSE/train.py, or pass "
                "--url and --sha256 of an archive you have"
            )
        url, sha256, size = entry["url"], entry["sha256"], entry.get("size")
    else:
        size = None
        if not url or not sha256:
            raise DownloadError("give --name, or --url together with --sha256")
        name = re.sub(r"(\.tar\.gz|\.tgz|\.tar)$", "", url.rstrip("/").rsplit("/", 1)[-1])
        name = name or "model"
    if not str(url).startswith(("http://", "https://", "file:")):
        raise DownloadError(f"'{url}' is not an http(s):// or file: URL")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
        raise DownloadError(f"'{sha256}' is not a SHA-256 (64 hexadecimal digits)")
    return {"name": name, "url": url, "sha256": str(sha256).lower(), "size": size}


# --------------------------------------------------------------------------------------
# Transfer
# --------------------------------------------------------------------------------------


def sha256_file(path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _transfer_once(url: str, part: Path, have: int, timeout: float, size: int | None) -> bool:
    """One request; appends to ``part``. Returns True when the file is complete."""
    headers = {"User-Agent": "tse-download-model/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", None) or response.getcode() or 200
        mode = "wb"
        if have and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                logger.warning("server answered the resume with bytes from %s: restarting", start)
                have = 0
                # the body is not what we asked for: fetch again without Range
                return _transfer_once(url, part, 0, timeout, size)
            mode = "ab"
        elif have:
            logger.warning("server ignores resume requests (HTTP %s): downloading from 0", status)
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else size
        received = have
        try:
            handle = open(part, mode)
        except OSError as error:
            raise _disk_error(error, part) from None
        with handle:
            while True:
                block = response.read(BLOCK)  # network errors propagate to the caller
                if not block:
                    break
                try:
                    handle.write(block)
                except OSError as error:
                    raise _disk_error(error, part) from None
                received += len(block)
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                raise _disk_error(error, part) from None
    if expected is not None and received < expected:
        raise ConnectionError(f"connection closed after {received} of {expected} bytes")
    return True


def download(url: str, part: Path, size: int | None, timeout=30.0, retries=3, wait=1.0) -> None:
    """Download ``url`` into ``part``, resuming what is already there.

    Raises
    ------
    DownloadError
        Network failure after ``retries`` retries without progress (the
        partial file is kept for the next run), HTTP errors, disk errors.
    """
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            logger.warning("%s is larger than the release: starting again", part.name)
            part.unlink()
            have = 0
        if size is not None and have == size and have > 0:
            return
        if have:
            logger.info("resuming %s at byte %d", url, have)
        try:
            _transfer_once(url, part, have, timeout, size)
            return
        except urllib.error.HTTPError as error:
            if error.code == 416 and have:
                # Nothing left to send: the .part file is complete (or stale; the checksum tells).
                return
            if error.code < 500:
                raise DownloadError(
                    f"HTTP error {error.code} ({error.reason}) for {url}", EXIT_NETWORK
                ) from None
            problem = f"HTTP error {error.code} ({error.reason})"
        except DownloadError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", None) or error
            problem = f"{type(error).__name__}: {reason}"
        now = part.stat().st_size if part.exists() else 0
        failures = 0 if now > have else failures + 1
        if failures > retries:
            kept = f"; {now} bytes kept in {part}: run the same command to resume" if now else ""
            raise DownloadError(f"network error downloading {url}: {problem}{kept}", EXIT_NETWORK)
        logger.warning("download interrupted (%s): retrying", problem)
        time.sleep(wait * failures)


# --------------------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------------------


def _model_root(folder: Path) -> Path:
    if all((folder / name).is_file() for name in REQUIRED_FILES):
        return folder
    children = [child for child in folder.iterdir() if not child.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        return _model_root(children[0])
    raise DownloadError(
        f"the archive is not a model directory: {' and '.join(REQUIRED_FILES)} not found "
        "at its top or in its single top-level folder"
    )


def unpack(archive: Path, dest: Path, stamp: dict) -> Path:
    """Unpack a model archive into ``dest`` through a temporary folder."""
    tmp = new_dir_beside(dest, "unpack")
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, ValueError) as error:
            raise DownloadError(f"{archive}: not a valid .tar.gz archive ({error})") from None
        except OSError as error:
            raise _disk_error(error, dest.parent) from None
        root = _model_root(tmp)
        (root / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        replace_dir(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def already_present(dest: Path, sha256: str) -> bool:
    """Whether ``dest`` is a complete model directory from the archive ``sha256``."""
    try:
        stamp = json.loads((dest / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return stamp.get("sha256") == sha256 and all((dest / n).is_file() for n in REQUIRED_FILES)


def download_model(
    name=None,
    url=None,
    sha256=None,
    dest=None,
    manifest=DEFAULT_MANIFEST,
    force=False,
    retries=3,
    timeout=30.0,
    wait=1.0,
) -> Path:
    """Download, verify and unpack a model directory; returns its path.

    Arguments
    ---------
    name : str, optional
        A model of ``manifest``.
    url, sha256 : str, optional
        An archive not in the manifest (both needed).
    dest : str or Path, optional
        Target directory (default ``pretrained_models/<name>`` in the repository).
    manifest : str or Path
        The models.json to read.
    force : bool
        Replace ``dest`` even if it holds another model.
    retries : int
        Retries after a network failure without progress.
    timeout : float
        Socket timeout in seconds.
    wait : float
        Seconds to wait before the first retry (grows linearly).

    Raises
    ------
    DownloadError
        With the reason and the exit status for the command line.
    """
    release = resolve(name, url, sha256, manifest)
    dest = Path(dest) if dest is not None else DEFAULT_ROOT / release["name"]
    dest = dest.expanduser().absolute()
    if already_present(dest, release["sha256"]) and not force:
        logger.info("%s already holds this model (sha256 %s)", dest, release["sha256"][:12])
        return dest
    if dest.exists() and not force:
        raise DownloadError(
            f"{dest} exists and does not hold this model: use --force to replace it "
            "or choose another --dest"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _disk_error(error, dest.parent) from None
    part = dest.parent / f".{dest.name}.{release['sha256'][:16]}.tar.gz.part"
    size = release["size"]
    if size:
        have = part.stat().st_size if part.exists() else 0
        need = (size - have) + size  # the rest of the archive + the unpacked model
        free = shutil.disk_usage(dest.parent).free
        if free < need:
            raise DownloadError(
                f"not enough disk space in {dest.parent}: {need / 1e6:.1f} MB needed, "
                f"{free / 1e6:.1f} MB free",
                EXIT_DISK,
            )
    try:
        download(release["url"], part, size, timeout=timeout, retries=retries, wait=wait)
    except OSError as error:
        raise _disk_error(error, part) from None
    actual_size = part.stat().st_size
    digest = sha256_file(part)
    if (size and actual_size != size) or digest != release["sha256"]:
        part.unlink(missing_ok=True)
        if size and actual_size != size:
            what = f"{actual_size} bytes (expected {size})"
        else:
            what = f"sha256 {digest} (expected {release['sha256']})"
        raise DownloadError(
            f"checksum mismatch for {release['url']}: got {what}; the download was deleted. "
            "Run again to download it afresh; if this persists the file on the server is not "
            "the one models.json describes",
            EXIT_CHECKSUM,
        )
    stamp = {"name": release["name"], "url": release["url"], "sha256": digest, "size": actual_size}
    try:
        unpack(part, dest, stamp)
    except DownloadError as error:
        if error.status == EXIT_REQUEST:  # a rejected archive: the same bytes would fail again
            part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    return dest


def pack(model_dir, out=None) -> dict:
    """Make a release archive of a model directory; returns its models.json entry.

    The archive holds one top-level folder named like the archive (without
    ``.tar.gz``), which is also the release name.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DownloadError(f"{model_dir}: model directory not found")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise DownloadError(f"{model_dir}: not a model directory ({' and '.join(missing)} missing)")
    out = Path(out) if out else Path(f"{model_dir.resolve().name}.tar.gz")
    if is_inside(out, model_dir):
        raise DownloadError(
            f"{out}: --out is inside the packed directory {model_dir} (it would replace or "
            "pack a model file): write the archive elsewhere"
        )
    if out.is_dir():
        raise DownloadError(f"{out}: is a directory; --out must be an archive file name")
    if not re.search(r"(\.tar\.gz|\.tgz)$", out.name):
        raise DownloadError(f"{out}: --out must end in .tar.gz (the release name is the rest)")
    name = re.sub(r"(\.tar\.gz|\.tgz)$", "", out.name)
    try:
        with atomic_path(out) as tmp, tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(model_dir.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    tar.add(path, arcname=f"{name}/{path.name}")
    except OSError as error:
        raise _disk_error(error, out) from None
    return {
        "name": name,
        "url": f"https://YOUR-HOST/{out.name}",
        "sha256": sha256_file(out),
        "size": out.stat().st_size,
        "description": "",
    }


def _main(argv) -> int:
    parser = ArgumentParser(prog="download_model.py",
                            description="Download a released TSE model directory.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--name", help="model name in models.json")
    source.add_argument("--url", help="URL of a model archive (.tar.gz); needs --sha256")
    source.add_argument("--list", action="store_true", help="list the models of models.json")
    source.add_argument("--pack", metavar="MODEL_DIR", help="make a release archive of a model dir")
    parser.add_argument("--out", help="archive path for --pack (default MODEL_DIR_NAME.tar.gz)")
    parser.add_argument("--sha256", help="expected SHA-256 of the archive (with --url)")
    parser.add_argument("--dest", help="model directory to create (default pretrained_models/NAME)")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="models.json to read")
    parser.add_argument("--force", action="store_true", help="replace an existing --dest")
    parser.add_argument("--retries", type=int, default=3, help="retries without progress")
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout (s)")
    args = parser.parse_args(argv)
    if args.url and not args.sha256:
        parser.error("--url needs --sha256")
    if args.out and not args.pack:
        parser.error("--out goes with --pack (a download goes to --dest)")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.pack:
            entry = pack(args.pack, args.out)
            name = entry.pop("name")
            print(f"upload {args.out or name + '.tar.gz'} and add to models.json:")
            print(json.dumps({name: entry}, indent=2)[2:-2])
            return 0
        if args.list:
            for name, entry in sorted(load_manifest(args.manifest).items()):
                state = "not published yet" if is_placeholder(entry) else entry["url"]
                print(f"{name}: {entry.get('description', '')} [{state}]")
            return 0
        dest = download_model(
            args.name, args.url, args.sha256, args.dest, args.manifest,
            force=args.force, retries=args.retries, timeout=args.timeout,
        )
    except DownloadError as error:
        print(f"download_model.py: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("download_model.py: interrupted; run the same command to resume", file=sys.stderr)
        return 130
    print(f"model ready in {dest}")
    return 0


main = entry_point(_main, "download_model.py")


if __name__ == "__main__":
    sys.exit(main())
