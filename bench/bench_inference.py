#!/usr/bin/env python3
"""Benchmark long-input inference: what chunking costs, and what memory it needs.

1. **Chunking loss.** For every item of a test directory (``mix/``, ``refs/``,
   optional ``targets/``, see ``modules/dataio.py``) the whole-utterance
   estimate is compared with chunked estimates (``--chunks`` seconds, hop
   ``--hop_ratio`` x chunk): ``si_sdr_vs_whole`` is the SI-SDR of the chunked
   estimate against the whole-utterance one (how much chunking changes the
   output; large is good), and with targets ``si_sdr_loss`` is
   ``SI-SDR(whole, target) - SI-SDR(chunked, target)`` (dB lost by chunking;
   small is good). Without ``--test_dir`` a directory of 8-12 s two-speaker
   mixtures is made from ``ci_tiny`` (``$TSE_SHARED_DATA`` or ``../shared/data``).
2. **Speed.** The real-time factor of ``extract`` for ``--rtf_seconds`` mixtures
   with each of ``--runtimes`` (``runtime`` of inference.yaml: torch, onnxruntime),
   timed in interleaved rounds, with the peak memory of a call and the largest
   difference of each runtime's output to the first one's.
3. **Peak memory.** For each of ``--memory_minutes`` a fresh subprocess loads
   the model, makes a mixture of that length and runs ``extract`` chunked
   (whole waveform in memory, as users get it: with the level matching) or a
   ``StreamingExtractor`` fed 1 s blocks
   (``--memory_modes``); it reports its peak resident memory during the
   processing (``VmHWM`` after resetting it through ``/proc/self/clear_refs``;
   ``ru_maxrss`` elsewhere) and the increase over the memory in use after
   loading the model.
   With chunking the model's activations do not grow with the input: the
   in-memory mode grows by the waveforms only (input + output, 8 bytes per
   sample), streaming stays flat.

::

    python bench/bench_inference.py --model_dir MODEL_DIR --test_dir TEST_DIR --out bench.json
    python bench/bench_inference.py --arch tiny --out bench_tiny.json   # machinery only
    python bench/bench_inference.py --skip chunking memory --threads 2 --out speed.json

A table is printed and everything is written as JSON to ``--out``. Random
weights (``--arch``) make the SI-SDR numbers a check of the machinery only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from modules.audio import SAMPLE_RATE as SR

REPO_ROOT = Path(__file__).resolve().parent.parent

logger = logging.getLogger("bench_inference")


def load_extractor(model_dir=None, arch="default", device="cpu", seed=0):
    """The extractor of ``model_dir``, or a SpEx+ with random weights."""
    from modules.inference import TargetSpeakerExtractor
    from modules.model_dir import model_args_from_hparams
    from modules.spex_plus import SpExPlus

    if model_dir:
        return TargetSpeakerExtractor.from_hparams(model_dir, run_opts={"device": device})
    torch.manual_seed(seed)
    tiny = REPO_ROOT / "recipes" / "LibriMix-TSE" / "hparams" / "tiny.yaml"
    model = SpExPlus(**(model_args_from_hparams(tiny) if arch == "tiny" else {})).eval()
    return TargetSpeakerExtractor.from_model(model, run_opts={"device": device})


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux ``/proc/self/clear_refs``); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Peak resident memory (MB) since the last :func:`reset_peak` (else since start)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_mb() -> float | None:
    """Current resident memory in MB (Linux), or None."""
    return _status_mb("VmRSS")


# --------------------------------------------------------------------------------------
# Chunking loss
# --------------------------------------------------------------------------------------


def make_test_dir(ci_tiny: Path, dest: Path, items: int) -> Path:
    """Two-speaker mixtures at 0 dB from ci_tiny: target = pieces 0+1, ref = piece 2."""
    from modules.audio import load_audio, save_audio

    speakers = sorted(p for p in (ci_tiny / "speech").iterdir() if p.is_dir())
    if len(speakers) < 2:
        raise SystemExit(f"{ci_tiny}: need at least 2 speakers in speech/")

    def pieces(speaker):
        return [load_audio(path)[0] for path in sorted(speaker.glob("*.flac"))]

    for index in range(items):
        target_spk = speakers[index % len(speakers)]
        other_spk = speakers[(index + 1 + index // len(speakers)) % len(speakers)]
        target_pieces, other_pieces = pieces(target_spk), pieces(other_spk)
        target = torch.cat(target_pieces[:2])
        other = torch.cat(other_pieces[:2] * 2)[: target.numel()]
        target = target[: other.numel()]
        scale = target.pow(2).mean().sqrt() / other.pow(2).mean().sqrt()
        mix = target + scale * other
        peak = float(mix.abs().max())
        gain = 0.9 / peak if peak > 0.9 else 1.0
        item = f"{target_spk.name}_{other_spk.name}-{index}"
        save_audio(dest / "mix" / f"{item}-mixed.wav", gain * mix, SR)
        save_audio(dest / "targets" / f"{item}-target.wav", gain * target, SR)
        save_audio(dest / "refs" / f"{item}-ref.wav", target_pieces[2], SR)
    return dest


def extract_with(extractor, mix, ref, **settings):
    """``extractor.extract(mix, ref)`` with some settings (``max_whole_seconds``, ...) changed."""
    saved = {key: getattr(extractor, key) for key in settings}
    try:
        for key, value in settings.items():
            setattr(extractor, key, value)
        return extractor.extract(mix, ref)
    finally:
        for key, value in saved.items():
            setattr(extractor, key, value)


def chunking_loss(extractor, test_dir: Path, chunks, hop_ratio: float, limit=None) -> dict:
    """Per chunk length: mean SI-SDR of chunked vs whole, and loss vs the targets."""
    from modules.dataio import CustomDirDataset
    from modules.metrics import si_sdr_graded

    dataset = CustomDirDataset(test_dir)
    problems = dataset.check()
    if problems:
        raise SystemExit(f"{test_dir}: {problems[0]}" + (f" (and {len(problems) - 1} more)"
                                                           if len(problems) > 1 else ""))
    ids = dataset.ids[:limit] if limit else dataset.ids
    rows = {chunk: {"si_sdr_vs_whole": [], "si_sdr_loss": []} for chunk in chunks}
    whole_scores, durations = [], []
    for index in range(len(ids)):
        item = dataset[index]
        mix, ref, target = item["mix"], item["ref"], item["target"]
        durations.append(mix.numel() / SR)
        whole = extract_with(extractor, mix, ref, max_whole_seconds=math.inf)
        whole_score = si_sdr_graded(whole, target) if target is not None else None
        whole_scores.append(whole_score)
        for chunk in chunks:
            est = extract_with(extractor, mix, ref, max_whole_seconds=0.0, chunk_seconds=chunk,
                               hop_seconds=chunk * hop_ratio)
            rows[chunk]["si_sdr_vs_whole"].append(si_sdr_graded(est, whole))
            if target is not None:
                rows[chunk]["si_sdr_loss"].append(whole_score - si_sdr_graded(est, target))
        logger.info("%s done (%.1f s)", item["id"], durations[-1])

    def mean(values):
        return sum(values) / len(values) if values else None

    return {
        "items": len(ids),
        "mean_duration_s": mean(durations),
        "hop_ratio": hop_ratio,
        "whole_si_sdr": mean([s for s in whole_scores if s is not None]),
        "chunks": {
            str(chunk): {key: mean(values) for key, values in row.items()}
            for chunk, row in rows.items()
        },
    }


# --------------------------------------------------------------------------------------
# Memory (one subprocess per case)
# --------------------------------------------------------------------------------------


def memory_case(args) -> dict:
    """Run in a subprocess: process ``args._memory_minutes`` of audio, report memory."""
    torch.set_num_threads(max(1, args.threads))
    extractor = load_extractor(args.model_dir, args.arch, args.device)
    ref = 0.1 * torch.randn(3 * SR, generator=torch.Generator().manual_seed(1))
    extractor.presence_score(ref, ref)  # warm up
    peak_reset = reset_peak()
    after_model = current_mb() if peak_reset else rss_mb()
    samples = int(args._memory_minutes * 60 * SR)
    block = torch.randn(SR, generator=torch.Generator().manual_seed(2)) * 0.1
    start = time.perf_counter()
    if args._memory_mode == "long":
        mix = block.repeat(samples // SR + 1)[:samples]
        est = extract_with(extractor, mix, ref, max_whole_seconds=0.0,
                           chunk_seconds=args.memory_chunk, hop_seconds=args.memory_chunk / 2)
        produced = est.numel()
    else:
        stream = extractor.stream(ref, args.memory_chunk, args.memory_chunk / 2)
        produced = 0
        for _ in range(samples // SR):
            produced += stream.push(block).numel()
        produced += stream.flush().numel()
    seconds = time.perf_counter() - start
    assert produced == samples, (produced, samples)
    peak = rss_mb()
    return {
        "minutes": args._memory_minutes,
        "mode": args._memory_mode,
        "chunk_seconds": args.memory_chunk,
        "rss_after_model_mb": round(after_model, 1),
        "peak_reset": peak_reset,
        "peak_rss_mb": round(peak, 1),
        "increase_mb": round(peak - after_model, 1),
        "waveforms_mb": round(samples * 8 / 2**20, 1) if args._memory_mode == "long" else 0.0,
        "real_time_factor": round(seconds / (samples / SR), 4),
    }


def memory_table(args) -> list[dict]:
    """One subprocess per (mode, minutes)."""
    results = []
    for mode in args.memory_modes:
        for minutes in args.memory_minutes:
            command = [sys.executable, str(Path(__file__).resolve()), "--_memory_minutes",
                       str(minutes), "--_memory_mode", mode, "--arch", args.arch,
                       "--device", args.device, "--memory_chunk", str(args.memory_chunk),
                       "--threads", str(args.threads)]
            if args.model_dir:
                command += ["--model_dir", str(args.model_dir)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                                  env={**os.environ, "SB_LOG_LEVEL": "WARNING"})
            if done.returncode != 0:
                raise SystemExit(f"memory case {mode} {minutes} min failed:\n{done.stderr}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            logger.info("memory %s", results[-1])
    return results


# --------------------------------------------------------------------------------------
# Speed per runtime (one process, calls interleaved)
# --------------------------------------------------------------------------------------


def speed_table(extractor, runtimes, durations, rounds: int) -> list[dict]:
    """Real-time factor of ``extract`` per runtime and mixture length, and the output difference.

    The runtimes are timed in turn within each round (torch, onnxruntime, torch, ...),
    so that a change of machine load affects all of them alike; the median over the
    rounds is reported. ``peak_mb`` is the largest increase of the peak resident memory
    over the memory before a call. ``max_rel_diff`` is the largest difference to the
    first runtime's output, relative to its peak.
    """
    generator = torch.Generator().manual_seed(3)
    ref = 0.1 * torch.randn(4 * SR, generator=generator)
    mixes = {seconds: 0.1 * torch.randn(int(seconds * SR), generator=generator)
             for seconds in durations}  # fmt: skip
    rows = {(rt, s): {"runtime": rt, "seconds": s, "times": [], "peak_mb": 0.0}
            for rt in runtimes for s in durations}  # fmt: skip
    outputs = {}
    for runtime in runtimes:  # warm-up: the ONNX export happens at the first call
        extractor.runtime = runtime
        extractor.extract(mixes[durations[0]], ref)
    for _ in range(rounds):
        for seconds in durations:
            for runtime in runtimes:
                extractor.runtime = runtime
                before = current_mb() if reset_peak() else None
                start = time.perf_counter()
                est = extractor.extract(mixes[seconds], ref)
                row = rows[runtime, seconds]
                row["times"].append(time.perf_counter() - start)
                if before is not None:
                    row["peak_mb"] = max(row["peak_mb"], round(rss_mb() - before, 1))
                outputs[runtime, seconds] = est
    for (runtime, seconds), row in rows.items():
        row["real_time_factor"] = round(statistics.median(row["times"]) / seconds, 4)
        plain = outputs[runtimes[0], seconds]
        diff = (outputs[runtime, seconds] - plain).abs().max() / plain.abs().max().clamp_min(1e-12)
        row["max_rel_diff"] = float(diff)
    extractor.runtime = runtimes[0]
    return sorted(rows.values(), key=lambda row: (row["seconds"], runtimes.index(row["runtime"])))


# --------------------------------------------------------------------------------------


def format_tables(report: dict) -> str:
    """Plain-text tables of a report."""
    lines = []
    loss = report.get("chunking")
    if loss:
        lines.append(f"Chunking vs whole utterance ({loss['items']} items, mean "
                     f"{loss['mean_duration_s']:.1f} s, hop = {loss['hop_ratio']} x chunk; "
                     f"whole SI-SDR {_num(loss['whole_si_sdr'])} dB)")
        lines.append(f"{'chunk (s)':>10} {'SI-SDR vs whole (dB)':>22} {'SI-SDR loss (dB)':>18}")
        for chunk, row in loss["chunks"].items():
            lines.append(f"{chunk:>10} {_num(row['si_sdr_vs_whole']):>22} "
                         f"{_num(row['si_sdr_loss']):>18}")
    speed = report.get("speed")
    if speed:
        lines.append("")
        lines.append(f"Speed ({report['threads']} threads, median of {report['rounds']} "
                     "interleaved rounds)")
        lines.append(f"{'runtime':>12} {'seconds':>8} {'RTF':>7} {'peak MB':>8} "
                     f"{'max rel. diff':>14}")
        for row in speed:
            lines.append(f"{row['runtime']:>12} {row['seconds']:>8} "
                         f"{row['real_time_factor']:>7.3f} {row['peak_mb']:>8} "
                         f"{row['max_rel_diff']:>14.1e}")
    memory = report.get("memory")
    if memory:
        lines.append("")
        lines.append(f"Peak memory (chunk {memory[0]['chunk_seconds']} s, hop half a chunk)")
        lines.append(f"{'mode':>8} {'minutes':>8} {'after model MB':>15} {'peak MB':>9} "
                     f"{'increase MB':>12} {'of which waveforms':>19} {'RTF':>7}")
        for row in memory:
            lines.append(f"{row['mode']:>8} {row['minutes']:>8} {row['rss_after_model_mb']:>15} "
                         f"{row['peak_rss_mb']:>9} {row['increase_mb']:>12} "
                         f"{row['waveforms_mb']:>19} {row['real_time_factor']:>7}")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", help="model directory (default: random weights)")
    parser.add_argument("--arch", choices=["default", "tiny"], default="default",
                        help="architecture of the random model without --model_dir")
    parser.add_argument("--test_dir", help="test directory (default: made from ci_tiny)")
    parser.add_argument("--items", type=int, default=4, help="items to make from ci_tiny")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N items")
    parser.add_argument("--chunks", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--hop_ratio", type=float, default=0.5, help="hop / chunk")
    parser.add_argument("--memory_minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--memory_modes", nargs="+", choices=["long", "stream"],
                        default=["long", "stream"])
    parser.add_argument("--memory_chunk", type=float, default=4.0, help="chunk (s) for memory")
    parser.add_argument("--skip", nargs="*", choices=["chunking", "speed", "memory"],
                        default=[])
    parser.add_argument("--runtimes", nargs="+", choices=["torch", "onnxruntime"],
                        default=["torch", "onnxruntime"], help="runtimes of the speed table")
    parser.add_argument("--rtf_seconds", type=float, nargs="+", default=[4.0, 10.0, 30.0],
                        help="mixture lengths of the speed table")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the speed table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--out", help="JSON report")
    parser.add_argument("--_memory_minutes", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--_memory_mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    if args._memory_minutes is not None:
        print(json.dumps(memory_case(args)))
        return 0
    torch.set_num_threads(max(1, args.threads))
    report = {
        "model": args.model_dir or f"random weights, {args.arch} SpEx+ architecture",
        "device": args.device,
        "threads": args.threads,
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
    }
    if "chunking" not in args.skip:
        extractor = load_extractor(args.model_dir, args.arch, args.device)
        with tempfile.TemporaryDirectory() as tmp:
            test_dir = Path(args.test_dir) if args.test_dir else None
            if test_dir is None:
                shared = Path(os.environ.get("TSE_SHARED_DATA", REPO_ROOT.parent / "shared/data"))
                test_dir = make_test_dir(shared / "ci_tiny", Path(tmp), args.items)
            report["chunking"] = chunking_loss(
                extractor, test_dir, args.chunks, args.hop_ratio, args.limit
            )
    report["rounds"] = args.rounds
    if "speed" not in args.skip:
        extractor = load_extractor(args.model_dir, args.arch, args.device)
        report["speed"] = speed_table(extractor, args.runtimes, args.rtf_seconds, args.rounds)
    if "memory" not in args.skip:
        report["memory"] = memory_table(args)
    print(format_tables(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
