"""evaluate.py end to end on a small test directory built from ci_tiny (real speech).

Each item: mix = part0 of speaker A + part0 of speaker B (same RMS), ref = part1 of A,
target = part0 of A. The baselines bound what a model can get: the clean target scores
the metric ceilings, the unprocessed mixture an SI-SDRi of exactly 0 dB.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modules.audio import load_audio, save_audio

REPO_ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 3

pytestmark = pytest.mark.slow


def build_test_dir(ci_tiny: Path, root: Path, n_items: int = N_ITEMS) -> list[str]:
    """Write ``root/{mix,refs,targets}`` from ci_tiny; returns the IDs."""
    speakers = sorted((ci_tiny / "speech").iterdir())
    ids = []
    for index in range(n_items):
        spk_a, spk_b = speakers[index], speakers[index + n_items]
        target = load_audio(next(spk_a.glob("*-part0.flac")))[0]
        ref = load_audio(next(spk_a.glob("*-part1.flac")))[0]
        interferer = load_audio(next(spk_b.glob("*-part0.flac")))[0]
        interferer = np.resize(interferer.numpy(), len(target))  # loop/trim to target length
        interferer = interferer * float(target.square().mean().sqrt()) / np.sqrt(
            np.mean(interferer**2))
        mix = target.numpy() + interferer
        scale = min(1.0, 0.9 / np.abs(mix).max())
        item_id = f"{spk_a.name}-{spk_b.name}_{index}"
        save_audio(root / "mix" / f"{item_id}-mixed.wav", scale * mix, 16000)
        save_audio(root / "targets" / f"{item_id}-target.wav", scale * target, 16000)
        save_audio(root / "refs" / f"{item_id}-ref.wav", ref, 16000)
        ids.append(item_id)
    return ids


@pytest.fixture(scope="module")
def test_dir(ci_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("tse_test")
    build_test_dir(ci_tiny, root)
    return root


@pytest.fixture(scope="module")
def bad_dir(test_dir, tmp_path_factory):
    """The good items plus a stereo mixture and a mixture without its reference."""
    root = tmp_path_factory.mktemp("tse_bad") / "test"
    shutil.copytree(test_dir, root)
    first = sorted((root / "mix").iterdir())[0]
    data, rate = sf.read(first)
    sf.write(root / "mix" / "stereo_1-mixed.wav", np.stack([data, data], axis=1), rate)
    shutil.copy(root / "targets" / first.name.replace("-mixed", "-target"),
                root / "targets" / "stereo_1-target.wav")
    shutil.copy(root / "refs" / first.name.replace("-mixed", "-ref"),
                root / "refs" / "stereo_1-ref.wav")
    shutil.copy(first, root / "mix" / "lonely-2-mixed.wav")
    shutil.copy(root / "targets" / first.name.replace("-mixed", "-target"),
                root / "targets" / "lonely-2-target.wav")
    return root


def run_evaluate(*args):
    return subprocess.run(
        [sys.executable, "evaluate.py", "hparams/test.yaml", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800,
    )


def test_baseline_target_reaches_the_ceiling(test_dir, tmp_path):
    out, est_dir = tmp_path / "out", tmp_path / "est"
    result = run_evaluate("--test_dir", test_dir, "--baseline", "target",
                          "--output_folder", out, "--save_dir", est_dir)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["scored"] == N_ITEMS and summary["skipped"] == 0
    assert summary["system"] == "baseline_target"
    means = summary["means"]
    assert means["si_sdr"] > 50 and means["si_sdr_zero_mean"] > 50
    assert 4.4 < means["pesq"] <= 4.65
    assert means["stoi"] > 0.99
    rows = (out / "per_utterance.csv").read_text().splitlines()
    assert rows[0].startswith("ID,si_sdr,si_sdr_zero_mean,si_sdri,pesq,stoi,")
    assert len(rows) == N_ITEMS + 1
    assert len(list(est_dir.glob("*-est.wav"))) == N_ITEMS
    assert "si_sdr (dB)" in result.stdout and "Traceback" not in result.stderr


def test_baseline_mixture_has_zero_improvement(test_dir, tmp_path):
    out = tmp_path / "out"
    result = run_evaluate("--test_dir", test_dir, "--baseline", "mixture",
                          "--output_folder", out, "--metrics", "[si_sdr, si_sdri]")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["means"]["si_sdri"] == 0.0
    assert abs(summary["means"]["si_sdr"]) < 3.0  # equal-RMS two-speaker mixture
    assert set(summary["metrics"]) == {"si_sdr", "si_sdri"}


def test_compare_baselines_one_table(test_dir, tmp_path):
    """--compare_baselines scores the mixture on the same items: one table, two columns."""
    out = tmp_path / "out"
    result = run_evaluate("--test_dir", test_dir, "--baseline", "target", "--output_folder",
                          out, "--metrics", "[si_sdr, si_sdri]", "--compare_baselines",
                          "[mixture, target]")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["baseline_means"]) == ["mixture"]  # the scored system is not repeated
    assert summary["baseline_means"]["mixture"]["si_sdri"] == 0.0
    assert summary["means"]["si_sdr"] > 50
    header = next(line for line in result.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "mixture", "baseline_target"]

    wrong = run_evaluate("--test_dir", test_dir, "--baseline", "target", "--output_folder",
                         out, "--compare_baselines", "[noise]")
    assert wrong.returncode == 2 and "--compare_baselines" in wrong.stderr


def test_bad_dir_is_refused_with_one_message(bad_dir, tmp_path):
    out = tmp_path / "out"
    result = run_evaluate("--test_dir", bad_dir, "--baseline", "mixture",
                          "--output_folder", out)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("evaluate.py: error: ") == 1
    assert "stereo_1-mixed.wav: 2 channels" in result.stderr
    assert "lonely-2-mixed.wav: no reference" in result.stderr
    assert "--skip_bad" in result.stderr
    assert not out.exists()


def test_skip_bad_scores_the_rest(bad_dir, tmp_path):
    out = tmp_path / "out"
    result = run_evaluate("--test_dir", bad_dir, "--baseline", "mixture", "--skip_bad",
                          "--output_folder", out, "--metrics", "[si_sdri]")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == N_ITEMS and summary["skipped"] == 2
    assert {problem["id"] for problem in summary["problems"]} == {"stereo_1", "lonely-2"}
    assert "2 skipped as bad" in result.stdout


def test_problems_found_on_the_one_decode(test_dir, tmp_path):
    """A silent reference passes the header check; its item is refused when decoded."""
    root = tmp_path / "test"
    shutil.copytree(test_dir, root)
    ref = sorted((root / "refs").iterdir())[-1]
    data, rate = sf.read(ref)
    sf.write(ref, np.zeros_like(data), rate)
    out = tmp_path / "out"
    refused = run_evaluate("--test_dir", root, "--baseline", "mixture", "--output_folder", out)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{ref.name}: all samples are zero" in refused.stderr and "--skip_bad" in refused.stderr
    assert not (out / "summary.json").exists()
    skipped = run_evaluate("--test_dir", root, "--baseline", "mixture", "--skip_bad",
                           "--output_folder", out, "--metrics", "[si_sdri]")
    assert skipped.returncode == 0, skipped.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == N_ITEMS - 1 and summary["skipped"] == 1


def test_missing_test_dir_and_missing_targets(tmp_path, test_dir):
    result = run_evaluate("--test_dir", tmp_path / "nope", "--baseline", "mixture")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nope: test directory not found" in result.stderr
    no_targets = tmp_path / "no_targets"
    shutil.copytree(test_dir, no_targets, ignore=shutil.ignore_patterns("targets"))
    result = run_evaluate("--test_dir", no_targets, "--baseline", "mixture",
                          "--output_folder", tmp_path / "out")
    assert result.returncode == 2 and "--save_dir" in result.stderr
    assert not (tmp_path / "out").exists()


class _StubExtractor:
    """Stands in for modules.inference.TargetSpeakerExtractor: halves the mixture."""

    calls = []
    min_mix_samples, min_ref_samples, silence_dbfs = 1600, 8000, -80.0  # the model's limits

    @classmethod
    def from_hparams(cls, source, savedir, run_opts):
        cls.calls.append((source, savedir, run_opts))
        return cls()

    def extract(self, mix, ref, return_info=False):
        assert mix.dim() == 1 and ref.dim() == 1
        return (0.5 * mix, {}) if return_info else 0.5 * mix


def test_model_path_and_estimates_only(test_dir, tmp_path, monkeypatch):
    import types

    import evaluate

    stub = types.ModuleType("modules.inference")
    stub.TargetSpeakerExtractor = _StubExtractor
    monkeypatch.setitem(sys.modules, "modules.inference", stub)
    model_dir = tmp_path / "my_model"
    model_dir.mkdir()
    out = tmp_path / "out"
    status = evaluate.main(["hparams/test.yaml", "--test_dir", str(test_dir), "--model_dir",
                            str(model_dir), "--output_folder", str(out),
                            "--metrics", "[si_sdr, si_sdri]"])
    assert status == 0
    assert _StubExtractor.calls[-1] == (str(model_dir), str(model_dir), {"device": "cpu"})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["system"] == "my_model" and summary["model_dir"] == str(model_dir)
    assert summary["scored"] == N_ITEMS and summary["means"]["si_sdri"] < 0.1

    no_targets = tmp_path / "no_targets"
    shutil.copytree(test_dir, no_targets, ignore=shutil.ignore_patterns("targets"))
    est_dir = tmp_path / "est"
    status = evaluate.main(["hparams/test.yaml", "--test_dir", str(no_targets), "--model_dir",
                            str(model_dir), "--output_folder", str(tmp_path / "out2"),
                            "--save_dir", str(est_dir)])
    assert status == 0
    estimates = sorted(est_dir.glob("*-est.wav"))
    assert len(estimates) == N_ITEMS
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["scored"] == 0 and summary["metrics"] == {}
    assert not (tmp_path / "out2" / "per_utterance.csv").exists()


def test_interrupted_run_leaves_no_summary(test_dir, tmp_path, monkeypatch):
    import evaluate

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"complete": true, "stale": true}')
    calls = []

    def interrupting_metrics(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"si_sdr": 0.0}

    monkeypatch.setattr(evaluate, "compute_metrics", interrupting_metrics)
    status = evaluate.main(["hparams/test.yaml", "--test_dir", str(test_dir), "--baseline",
                            "mixture", "--output_folder", str(out), "--metrics", "[si_sdr]"])
    assert status == evaluate.EXIT_INTERRUPTED
    assert not (out / "summary.json").exists()
    assert not (out / "per_utterance.csv").exists()


class _RefusingExtractor(_StubExtractor):
    """Refuses mixtures shorter than 3 s, as a model refuses too-short input."""

    def extract(self, mix, ref, return_info=False):
        if mix.shape[-1] < 3 * 16000:
            raise ValueError(f"mixture is {mix.shape[-1]} samples long; too short")
        return (mix, {}) if return_info else mix


def test_item_refused_by_the_model(ci_tiny, tmp_path, monkeypatch):
    import types

    import evaluate

    test_dir = tmp_path / "test"
    ids = build_test_dir(ci_tiny, test_dir, n_items=2)  # item 1 (speaker 1034) is 2.6 s
    stub = types.ModuleType("modules.inference")
    stub.TargetSpeakerExtractor = _RefusingExtractor
    monkeypatch.setitem(sys.modules, "modules.inference", stub)
    (tmp_path / "model").mkdir()
    args = ["hparams/test.yaml", "--test_dir", str(test_dir), "--model_dir",
            str(tmp_path / "model"), "--output_folder", str(tmp_path / "out"),
            "--metrics", "[si_sdri]"]
    assert evaluate.main(args) == evaluate.EXIT_BAD_INPUT
    assert not (tmp_path / "out" / "summary.json").exists()
    assert evaluate.main([*args, "--skip_bad"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scored"] == 1 and summary["skipped"] == 1
    assert summary["problems"][0]["id"] == ids[1]
    assert "refused by the model" in summary["problems"][0]["problem"]


def test_real_untrained_model_runs_end_to_end(test_dir, tmp_path, tiny_args):
    from modules.model_dir import write_model_dir
    from modules.spex_plus import SpExPlus

    model_dir = write_model_dir(SpExPlus(**tiny_args), tmp_path / "tiny")
    out, est_dir = tmp_path / "out", tmp_path / "est"
    result = run_evaluate("--test_dir", test_dir, "--model_dir", model_dir, "--output_folder",
                          out, "--save_dir", est_dir, "--metrics", "[si_sdr, si_sdri]")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == N_ITEMS and summary["system"] == "tiny"
    assert summary["means"]["si_sdr"] is not None  # untrained: any finite value
    assert len(list(est_dir.glob("*-est.wav"))) == N_ITEMS
    # Per-item level notices are counted in one line, not logged item by item.
    assert 0 <= summary["peak_limited"] <= N_ITEMS and summary["chunked"] == 0
    assert f"of {N_ITEMS} estimate(s) peak-limited" in result.stderr
    assert "would clip" not in result.stderr
