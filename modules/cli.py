"""One convention for every command-line tool of the project.

Exit status: **0** done, **2** bad input or usage (one line on stderr,
``PROG: error: FILE: problem``, no traceback, nothing half-written), **1**
internal failure (a bug: the traceback is shown), **130** interrupted.

A script raises :class:`BadInput` (or a subclass, such as
:class:`modules.audio.AudioFileError`) for anything the user can fix, and runs
its ``main`` through :func:`run_main`. Scripts with fixed options use
:class:`ArgumentParser` (argparse whose errors are one line, exit 2); scripts
configured by a HyperPyYAML file (``evaluate.py``, ``train.py``) use
:func:`parse_hparams_args`, where any top-level key of the yaml can be
overridden as ``--key value``, unknown keys and values of the wrong type are
refused before anything is built, and a ``!PLACEHOLDER`` left empty is named.

Example
-------
>>> import contextlib
>>> def main(argv):
...     raise BadInput("data/x.wav: file not found")
>>> with contextlib.redirect_stderr(sys.stdout):
...     run_main(main, [], prog="demo.py")
demo.py: error: data/x.wav: file not found
2
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class BadInput(ValueError):
    """A problem the user can fix (bad file, bad option): exit status 2, one line."""


def _message(error: BaseException) -> str:
    text = str(error).strip()
    return text if text else type(error).__name__


def run_main(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    bad_input: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``main(argv)`` under the exit-status convention; returns the status.

    Arguments
    ---------
    main : callable
        Takes the argument list, returns an exit status (``None`` means 0).
    argv : list of str, optional
        Default ``sys.argv[1:]``.
    prog : str, optional
        Name in the messages (default: the script's file name).
    bad_input : tuple of exception types
        Further exceptions that mean bad input (e.g. a library's own error class).

    Example
    -------
    >>> run_main(lambda argv: int(argv[0]), ["3"])
    3
    """
    prog = prog or Path(sys.argv[0]).name
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = main(argv)
    except (BadInput, *bad_input) as error:
        print(f"{prog}: error: {_message(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exit_:  # argparse's --help, or a script's own exit
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE
    except Exception as error:  # noqa: BLE001 - the last resort: show the bug
        traceback.print_exc()
        print(f"{prog}: internal error (a bug, please report it): {_message(error)}",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if status is None else int(status)


def entry_point(run: Callable[[list[str]], int | None], prog: str) -> Callable[..., int]:
    """The ``main(argv=None) -> status`` of a script: ``run`` under :func:`run_main`.

    Example
    -------
    >>> main = entry_point(lambda argv: len(argv), "count.py")
    >>> main(["a", "b"]), main.__doc__.split(";")[0]
    (2, 'Command-line entry point of count.py')
    """

    def main(argv: Sequence[str] | None = None) -> int:
        return run_main(run, argv, prog=prog)

    main.__doc__ = (
        f"Command-line entry point of {prog}; returns the exit status "
        "(0 done, 2 bad input or usage, 1 failure)."
    )
    return main


def checked_type(convert: Callable, accept: Callable, expected: str) -> Callable:
    """An argparse ``type``: ``convert(text)``, refused unless ``accept(value)``.

    Example
    -------
    >>> lufs = checked_type(float, lambda v: -70 <= v <= 0, "LUFS in [-70, 0]")
    >>> lufs("-23")
    -23.0
    >>> lufs("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected LUFS in [-70, 0], got nan
    """

    def parse(text: str):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = convert.__name__  # argparse's "invalid float value" for bad text
    return parse


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``PROG: error: ... (see --help)``, exit 2).

    Example
    -------
    >>> parser = ArgumentParser(prog="demo.py")
    >>> _ = parser.add_argument("--n", type=int)
    >>> import contextlib
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     run_main(parser.parse_args, ["--n", "x"], prog="demo.py")
    demo.py: error: argument --n: invalid int value: 'x' (see --help)
    2
    """

    def error(self, message: str):
        raise BadInput(f"{message} (see --help)")

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def same_file(a, b) -> bool:
    """Whether two paths name the same file (links, ``./`` and ``..`` resolved).

    Example
    -------
    >>> same_file("/tmp/../tmp/x.wav", "/tmp/./x.wav")
    True
    """
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def is_inside(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (after resolving links).

    Example
    -------
    >>> is_inside("/data/set/mix/x.wav", "/data/set"), is_inside("/data/other", "/data/set")
    (True, False)
    """
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_output_file(path, inputs: Sequence = (), option: str = "--out") -> Path:
    """Refuse an output file that would destroy an input or cannot be written.

    Checked before any computation: the path is not an input (under any spelling),
    not a folder, and its folder exists (or can be created) and is writable.

    Raises
    ------
    BadInput
        Naming the path and the problem.

    Example
    -------
    >>> check_output_file("/tmp/a/../in.wav", inputs=["/tmp/in.wav"])
    Traceback (most recent call last):
    ...
    modules.cli.BadInput: /tmp/a/../in.wav: --out is the input file /tmp/in.wav; ...
    """
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise BadInput(
                f"{path}: {option} is the input file {source}; it would be overwritten: "
                "choose another output path"
            )
    if path.is_dir():
        raise BadInput(f"{path}: is a directory; {option} must be a file name")
    check_writable_dir(path.parent, option, name=path)
    return path


def check_writable_dir(folder, option: str, name=None) -> Path:
    """Refuse a folder that is not a folder, or cannot be created or written to.

    The nearest existing ancestor must be a writable folder; nothing is created.
    ``name`` (default ``folder``) is the path the message names.

    Example
    -------
    >>> check_writable_dir("/proc/x/y", "--out_dir")
    Traceback (most recent call last):
    ...
    modules.cli.BadInput: /proc/x/y: --out_dir cannot be written there (/proc: ...)
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.is_symlink() or existing.parent == existing:
            break
        existing = existing.parent
    name = folder if name is None else name
    if existing.exists() and not existing.is_dir():
        raise BadInput(f"{name}: {option} is not a folder ({existing} is a file)")
    try:  # os.access says yes to root on read-only places such as /proc: really try
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BadInput(f"{name}: {option} cannot be written there ({existing}: "
                       f"{error.strerror or error})") from None
    return folder


def check_device(device: str) -> None:
    """Refuse a device name torch does not know, or CUDA where there is none.

    Example
    -------
    >>> check_device("abc")
    Traceback (most recent call last):
    ...
    modules.cli.BadInput: --device abc: not a torch device (use cpu, cuda or cuda:N)
    """
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise BadInput(f"--device {device}: not a torch device (use cpu, cuda or cuda:N)"
                       ) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"--device {device}: CUDA is not available on this machine")


# --------------------------------------------------------------------------------------
# HyperPyYAML command lines: HPARAMS.yaml --key value ...
# --------------------------------------------------------------------------------------


def _yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_overrides(tokens: Sequence[str], string_keys: Sequence[str] = ()) -> dict:
    """``["--a", "1", "--b=[x, y]", "--flag"]`` -> ``{"a": 1, "b": ["x", "y"], "flag": True}``.

    Values are read as YAML; a bare ``--flag`` means ``True``; ``string_keys``
    (paths) stay strings, with ``null``/``None`` meaning ``None``.

    Raises
    ------
    BadInput
        A token that is not an option, or a key given twice.

    Example
    -------
    >>> split_overrides(["--metrics", "[si_sdr, pesq]", "--skip_bad", "--out=01"], ["out"])
    {'metrics': ['si_sdr', 'pesq'], 'skip_bad': True, 'out': '01'}
    """
    overrides: dict = {}
    rest = list(tokens)
    while rest:
        token = rest.pop(0)
        if not token.startswith("--") or token == "--":
            raise BadInput(f"unexpected argument {token!r}: options are --key value")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            value = rest.pop(0) if rest and not rest[0].startswith("--") else "true"
        if key in overrides:
            raise BadInput(f"--{key} is given twice")
        if key in string_keys:
            overrides[key] = None if value in ("null", "None", "") else value
        else:
            overrides[key] = _yaml_value(value)
    return overrides


def read_yaml_tree(hparams_file) -> dict:
    """The top-level keys and values of a HyperPyYAML file, nothing built.

    Tags (``!new:``, ``!ref``, ...) stay unresolved ruamel objects.
    """
    import ruamel.yaml

    try:
        with open(hparams_file, encoding="utf-8") as stream:
            tree = ruamel.yaml.YAML().load(stream)
    except (OSError, ruamel.yaml.YAMLError) as error:
        raise BadInput(f"{hparams_file}: cannot read the hparams file ({_message(error)})"
                       ) from None
    if not isinstance(tree, dict):
        raise BadInput(f"{hparams_file}: not a YAML mapping of hparams")
    return dict(tree)


def _kind(value) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return None


def check_overrides(hparams_file, overrides: dict) -> None:
    """Refuse overrides of keys the file lacks, and numbers or booleans of the wrong type.

    Raises
    ------
    BadInput
        ``unknown option --x (did you mean --y?)`` or ``--batch_size expects a number``.
    """
    tree = read_yaml_tree(hparams_file)
    keys = [key for key in tree if not str(key).startswith("__")]
    for key, value in overrides.items():
        if key not in tree:
            close = difflib.get_close_matches(key, keys, n=3)
            hint = (f"did you mean {', '.join('--' + k for k in close)}?" if close
                    else f"the options are the keys of {hparams_file}")
            raise BadInput(f"unknown option --{key} ({hint})")
        kind = _kind(tree[key])
        if kind == "number" and _kind(value) != "number":
            raise BadInput(f"--{key} expects a number (default {tree[key]}), got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise BadInput(f"--{key} expects True or False, got {value!r}")


def parse_hparams_args(
    argv: Sequence[str],
    usage: str,
    string_keys: Sequence[str] = (),
    passthrough: Sequence[str] = (),
) -> tuple[Path, dict, list[str]]:
    """Split ``HPARAMS.yaml --key value ...`` into the file, checked overrides and the rest.

    Arguments
    ---------
    argv : list of str
        The command line after the program name.
    usage : str
        Printed for ``-h``/``--help`` (exit 0) and named when the file is missing.
    string_keys : sequence of str
        Keys whose values stay strings (paths).
    passthrough : sequence of str
        Options that are not yaml keys but belong to someone else (e.g. SpeechBrain's
        run options such as ``--device``); returned unparsed, with their values, for the
        caller to parse. A yaml key of the same name wins.

    Returns
    -------
    hparams_file : Path
    overrides : dict
        For ``load_hyperpyyaml``; every key exists in the file with a value of the
        right kind.
    rest : list of str
        The passthrough options and their values.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "h.yaml"
    >>> _ = path.write_text("batch_size: 8\\ndata: !PLACEHOLDER\\n")
    >>> parse_hparams_args([str(path), "--batch_size", "4", "--device", "cpu"], "usage",
    ...                    passthrough=["device"])[1:]
    ({'batch_size': 4}, ['--device', 'cpu'])
    >>> parse_hparams_args([str(path), "--batch_size", "four"], "usage")
    Traceback (most recent call last):
    ...
    modules.cli.BadInput: --batch_size expects a number (default 8), got 'four'
    """
    argv = list(argv)
    if any(token in ("-h", "--help") for token in argv):
        sys.stdout.write(usage.rstrip() + "\n")
        raise SystemExit(EXIT_OK)
    if not argv or argv[0].startswith("-"):
        raise BadInput(f"the hparams yaml file comes first; usage: {usage.strip().splitlines()[0]}")
    hparams_file = Path(argv[0])
    if not hparams_file.is_file():
        raise BadInput(f"{hparams_file}: hparams file not found")
    keys = set(read_yaml_tree(hparams_file))
    own, rest = [], []
    tokens = argv[1:]
    while tokens:
        token = tokens.pop(0)
        key = token[2:].partition("=")[0] if token.startswith("--") else None
        theirs = key in passthrough and key not in keys
        target = rest if theirs else own
        target.append(token)
        # a passthrough option takes every value that follows it (nargs="*"), ours one
        while "=" not in token and tokens and not tokens[0].startswith("--"):
            target.append(tokens.pop(0))
            if not theirs:
                break
    overrides = split_overrides(own, string_keys)
    check_overrides(hparams_file, overrides)
    return hparams_file, overrides, rest


def _placeholder(error: ValueError, hparams_file) -> BadInput | None:
    """``--key is required`` for hyperpyyaml's ``'key' is a !PLACEHOLDER`` error."""
    message = str(error)
    if "PLACEHOLDER" not in message:
        return None
    key = message.split("'")[1] if message.count("'") >= 2 else message
    return BadInput(f"--{key} is required ({hparams_file})")


def load_hparams(hparams_file, overrides: dict) -> dict:
    """``load_hyperpyyaml`` with a ``!PLACEHOLDER`` left empty reported as bad input."""
    from hyperpyyaml import load_hyperpyyaml

    with open(hparams_file, encoding="utf-8") as stream:
        try:
            return load_hyperpyyaml(stream, overrides)
        except ValueError as error:
            raise (_placeholder(error, hparams_file) or error) from None


def resolve_hparams(hparams_file, overrides: dict) -> dict:
    """The top-level values with overrides and ``!ref`` resolved, nothing built.

    Use it to check inputs (paths, sizes) before ``load_hyperpyyaml`` builds models.
    Values built by tags (``!new:``, ``!apply:``) stay unresolved ruamel objects.

    Raises
    ------
    BadInput
        A ``!PLACEHOLDER`` key without a value.
    """
    import ruamel.yaml
    from hyperpyyaml import resolve_references

    with open(hparams_file, encoding="utf-8") as stream:
        try:
            resolved = resolve_references(stream, overrides)
        except ValueError as error:
            raise (_placeholder(error, hparams_file) or error) from None
    return dict(ruamel.yaml.YAML().load(resolved) or {})
