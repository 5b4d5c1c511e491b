"""Atomic writes (modules/files.py) and checked audio writes (modules/audio.py)."""

import os
import stat

import pytest
import torch

from modules.audio import AudioFileError, save_audio
from modules.files import atomic_path, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_normal_mode(tmp_path, umask_022):
    save_audio(tmp_path / "a.wav", 0.1 * torch.ones(100), 16000)
    save_audio(tmp_path / "a.flac", 0.1 * torch.ones(100), 16000)
    atomic_write_text(tmp_path / "a.csv", "x\n")
    for name in ("a.wav", "a.flac", "a.csv"):
        assert _mode(tmp_path / name) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.flac", "a.wav"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


def test_unknown_audio_suffix_is_refused_before_writing(tmp_path):
    with pytest.raises(AudioFileError, match="unknown audio format"):
        save_audio(tmp_path / "est.xyz", torch.ones(10) * 0.1, 16000)
    assert list(tmp_path.iterdir()) == []
