"""modules.dataio: test-directory checking, with synthetic wavs written in tmp_path."""

import numpy as np
import pytest
import soundfile as sf
import torch

from modules.audio import SAMPLE_RATE as SR
from modules.audio import AudioFileError, save_audio
from modules.dataio import CustomDirDataset, InputLimits, Problem, manifest_dataset, read_wav

T = 16000  # 1 s (the reference is half of it: the shortest one a model takes)


def tone(length=T, freq=7.0, amplitude=0.1):
    return amplitude * torch.sin(torch.arange(length) / freq)


def write_item(root, item_id, mix=None, ref=None, target=None, sr=SR, target_sr=SR,
               targets=True):
    save_audio(root / "mix" / f"{item_id}-mixed.wav", tone() if mix is None else mix, sr)
    save_audio(root / "refs" / f"{item_id}-ref.wav", tone(T // 2) if ref is None else ref, sr)
    if targets:
        save_audio(root / "targets" / f"{item_id}-target.wav",
                   0.5 * tone() if target is None else target, target_sr)


def test_ids_with_dashes_and_underscores(tmp_path):
    for item_id in ("a-b_c-mixed-1", "19-198_0001", "x"):
        write_item(tmp_path, item_id)
    dataset = CustomDirDataset(tmp_path)
    assert dataset.check() == []
    assert dataset.ids == ["19-198_0001", "a-b_c-mixed-1", "x"]
    item = dataset[1]
    assert item["id"] == "a-b_c-mixed-1"
    assert item["mix"].shape == (T,) and item["ref"].shape == (T // 2,)
    assert item["target"].shape == (T,) and item["mix"].dtype == torch.float32
    assert dataset.has_targets and len(dataset) == 3


def test_without_targets_folder_target_is_none(tmp_path):
    write_item(tmp_path, "u1", targets=False)
    dataset = CustomDirDataset(tmp_path)
    assert dataset.check() == []
    assert not dataset.has_targets
    assert dataset[0]["target"] is None


def test_missing_counterparts_are_all_reported(tmp_path):
    write_item(tmp_path, "good")
    write_item(tmp_path, "noref")
    (tmp_path / "refs" / "noref-ref.wav").unlink()
    write_item(tmp_path, "notarget")
    (tmp_path / "targets" / "notarget-target.wav").unlink()
    save_audio(tmp_path / "refs" / "orphan-ref.wav", tone(), SR)
    dataset = CustomDirDataset(tmp_path)
    problems = dataset.check()
    by_id = {p.item_id: p for p in problems}
    assert set(by_id) == {"noref", "notarget", "orphan"}
    assert "no reference" in by_id["noref"].reason and "noref-ref.wav" in by_id["noref"].reason
    assert "no target" in by_id["notarget"].reason
    assert "no mixture" in by_id["orphan"].reason
    assert by_id["orphan"].path.endswith("orphan-ref.wav")
    assert dataset.drop_bad() == ["noref", "notarget"]
    assert dataset.ids == ["good"]


@pytest.mark.parametrize("defect, expected, in_header", [
    ("stereo", "2 channels", True),
    ("empty", "empty audio file", True),
    ("corrupt", "not a readable audio file", True),
    ("zero", "all samples are zero", False),
    ("nan", "NaN", False),
])
def test_bad_files_are_refused(tmp_path, defect, expected, in_header):
    """Header problems: by check(), for the whole directory; sample problems: on decoding."""
    write_item(tmp_path, "good")
    write_item(tmp_path, "bad")
    path = tmp_path / "refs" / "bad-ref.wav"
    if defect == "stereo":
        sf.write(path, np.stack([tone().numpy()] * 2, axis=1), SR)
    elif defect == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), SR)
    elif defect == "zero":
        sf.write(path, np.zeros(T, dtype=np.float32), SR)
    elif defect == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    elif defect == "nan":
        data = tone().numpy()
        data[5] = np.nan
        sf.write(path, data, SR, subtype="FLOAT")
    dataset = CustomDirDataset(tmp_path)
    problems = dataset.check()
    if not in_header:
        assert problems == []
        assert dataset[1]["id"] == "good"
        with pytest.raises(AudioFileError, match=expected) as error:
            dataset[0]
        assert error.value.path == str(path)
        return
    assert len(problems) == 1 and isinstance(problems[0], Problem)
    assert str(problems[0]).startswith(f"{path}: ")
    assert problems[0].path == str(path) and problems[0].item_id == "bad"
    assert expected in problems[0].reason


def test_target_at_8k_is_refused_mix_at_8k_is_resampled(tmp_path):
    write_item(tmp_path, "mix8k", mix=tone(T // 2), ref=tone(T // 4), sr=8000)
    write_item(tmp_path, "target8k", target=tone(T // 2), target_sr=8000)
    dataset = CustomDirDataset(tmp_path)
    problems = dataset.check()
    assert [p.item_id for p in problems] == ["target8k"]
    assert "target is 8000 Hz, expected 16000 Hz" in problems[0].reason
    assert any("mix8k-mixed.wav: resampled 8000 Hz -> 16000 Hz" in n for n in dataset.notes)
    dataset.drop_bad()
    item = dataset[0]
    assert item["id"] == "mix8k" and item["mix"].shape == (T,) and item["ref"].shape == (T // 2,)


def test_length_mismatch_mix_vs_target_is_refused(tmp_path):
    write_item(tmp_path, "u1", target=tone(T - 10))
    problems = CustomDirDataset(tmp_path).check()
    assert len(problems) == 1
    assert f"mix has {T} samples, target {T - 10}" in problems[0].reason


@pytest.mark.parametrize("layout, expected", [
    ("missing", "test directory not found"),
    ("empty", "no mix/ folder"),
    ("empty_mix", "no mixtures"),
    ("no_refs", "no refs/ folder"),
])
def test_structural_problems(tmp_path, layout, expected):
    root = tmp_path / "test"
    if layout != "missing":
        root.mkdir()
    if layout == "empty_mix":
        (root / "mix").mkdir()
        (root / "refs").mkdir()
    if layout == "no_refs":
        save_audio(root / "mix" / "u1-mixed.wav", tone(), SR)
    dataset = CustomDirDataset(root)
    problems = dataset.check()
    assert any(expected in p.reason for p in problems), problems
    if layout != "no_refs":
        assert len(dataset) == 0


def test_misnamed_files_are_reported_hidden_ignored(tmp_path):
    write_item(tmp_path, "u1")
    save_audio(tmp_path / "mix" / "u2-mix.wav", tone(), SR)
    (tmp_path / "mix" / ".DS_Store").write_bytes(b"x")
    problems = CustomDirDataset(tmp_path).check()
    assert len(problems) == 1
    assert problems[0].path.endswith("u2-mix.wav") and problems[0].item_id is None
    assert "not named <ID>-mixed.wav" in problems[0].reason


def test_getitem_on_bad_file_raises_audio_file_error(tmp_path):
    write_item(tmp_path, "u1")
    (tmp_path / "mix" / "u1-mixed.wav").write_bytes(b"not audio")
    with pytest.raises(AudioFileError, match="u1-mixed.wav"):
        CustomDirDataset(tmp_path)[0]


def test_read_wav_refuses_stereo(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, np.ones((100, 2), dtype=np.float32) * 0.1, SR)
    with pytest.raises(AudioFileError, match="channels"):
        read_wav(path)


def test_manifest_dataset(tmp_path):
    write_item(tmp_path, "u-1_a")
    (tmp_path / "test.csv").write_text(
        "ID,duration,mix_wav,ref_wav,target_wav,target_speaker,interferer_speaker\n"
        "u-1_a,0.25,$root/mix/u-1_a-mixed.wav,$root/refs/u-1_a-ref.wav,"
        "$root/targets/u-1_a-target.wav,103,1034\n"
    )
    data = manifest_dataset(tmp_path / "test.csv", replacements={"root": str(tmp_path)})
    item = data[0]
    assert set(item) == {"id", "mix", "ref", "target", "target_speaker"}
    assert item["id"] == "u-1_a" and item["target_speaker"] == "103"
    assert item["mix"].shape == (T,) and item["ref"].shape == (T // 2,)
    torch.testing.assert_close(item["target"], 0.5 * tone(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("ref", "mix", "expected"),
    [
        (tone(100), None, "reference is 0.006 s long"),
        (tone(int(0.3 * SR)), None, "reference is 0.300 s long"),
        (None, tone(800), "mixture is 0.050 s long"),
    ],
)
def test_model_length_limits_are_checked_up_front(tmp_path, ref, mix, expected):
    write_item(tmp_path, "u1", ref=ref, mix=mix, targets=False)
    problems = CustomDirDataset(tmp_path).check()
    assert [p.item_id for p in problems] == ["u1"] and expected in problems[0].reason


def test_silence_limit_is_checked_on_the_one_decode(tmp_path):
    write_item(tmp_path, "u1", ref=tone(T // 2, amplitude=1e-5), targets=False)
    dataset = CustomDirDataset(tmp_path)
    assert dataset.check() == []
    with pytest.raises(AudioFileError, match="u1-ref.wav: reference is silent"):
        dataset[0]


def test_check_reads_headers_only_and_each_file_is_decoded_once(tmp_path, monkeypatch):
    import modules.dataio

    for name in ("a", "b"):
        write_item(tmp_path, name)
    write_item(tmp_path, "mix8k", mix=tone(T // 2), ref=tone(T // 4), sr=8000)
    decoded = []
    real = modules.dataio.load_audio
    monkeypatch.setattr(modules.dataio, "load_audio",
                        lambda path, *a, **k: decoded.append(path) or real(path, *a, **k))
    dataset = CustomDirDataset(tmp_path)
    assert dataset.check() == [] and decoded == []
    items = [dataset[i] for i in range(len(dataset))]
    assert len(decoded) == len(set(decoded)) == 9  # 3 items x 3 files, each once
    assert items[2]["mix"].shape == (T,)  # the header's length at 16 kHz is the decoded one


def test_model_limits_come_from_the_model(tmp_path):
    write_item(tmp_path, "u1", ref=tone(100), targets=False)
    assert CustomDirDataset(tmp_path, limits=InputLimits(10, 50, -80.0)).check() == []


def test_empty_targets_folder_is_named_and_ignored_for_extraction(tmp_path):
    write_item(tmp_path, "u1", targets=False)
    (tmp_path / "targets").mkdir()
    problems = CustomDirDataset(tmp_path).check()
    assert len(problems) == 1 and "empty targets/ folder" in problems[0].reason
    assert CustomDirDataset(tmp_path, use_targets=False).check() == []
