"""mixing.corpus: decoding checks of every source file at scan time."""

import numpy as np
import pytest
import soundfile as sf

from mixing.corpus import BadFile, CorpusError, audio_problem, scan_corpora
from modules.audio import SAMPLE_RATE as SR


def _speech(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return 0.1 * rng.standard_normal(int(seconds * SR)) * np.hanning(int(seconds * SR))


@pytest.fixture
def corpus(tmp_path):
    """Speaker a: fine; b: all silent; c: one FLAC cut after a valid header."""
    root = tmp_path / "toy"
    for spk in "abc":
        (root / spk).mkdir(parents=True)
    sf.write(root / "a" / "1.flac", _speech(), SR)
    sf.write(root / "b" / "1.flac", np.zeros(SR), SR)
    sf.write(root / "b" / "2.wav", 1e-5 * _speech(), SR, subtype="FLOAT")
    sf.write(root / "c" / "1.flac", _speech(seed=1), SR)
    sf.write(root / "c" / "2.flac", _speech(2.0, seed=2), SR)
    data = (root / "c" / "2.flac").read_bytes()
    (root / "c" / "2.flac").write_bytes(data[: len(data) // 2])
    return root


def test_problems_are_named(corpus):
    assert audio_problem(corpus / "a" / "1.flac") is None
    assert audio_problem(corpus / "b" / "1.flac").startswith("silent")
    assert audio_problem(corpus / "b" / "2.wav").startswith("silent")
    cut = audio_problem(corpus / "c" / "2.flac", frames=2 * SR)
    assert "cannot be decoded" in cut or "decodes to" in cut


def test_unchecked_scan_reads_headers_only(corpus):
    assert sorted(scan_corpora([str(corpus)])) == ["toy:a", "toy:b", "toy:c"]


def test_checked_scan_refuses_listing_every_bad_file(corpus):
    with pytest.raises(CorpusError, match="3 unusable audio file") as error:
        scan_corpora([str(corpus)], check=True)
    assert "b/1.flac: silent" in str(error.value) and "c/2.flac" in str(error.value)


def test_checked_scan_can_leave_bad_files_out(corpus):
    bad: list[BadFile] = []
    found = scan_corpora([str(corpus)], check=True, bad_files=bad)
    assert sorted(found) == ["toy:a", "toy:c"] and len(found["toy:c"]) == 1
    assert sorted(b.path.rsplit("/", 2)[-2] for b in bad) == ["b", "b", "c"]
