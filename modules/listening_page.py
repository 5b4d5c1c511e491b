"""A self-contained folder to listen to and look at an evaluation: ``index.html``.

:func:`write_listening_page` writes::

    OUT/index.html              summary table, failure rates, histograms, items
    OUT/hist_<metric>.png       histogram of each per-item metric
    OUT/items/<ID>-<signal>.wav mixture, reference, estimate, target (16-bit PCM)
    OUT/items/<ID>-<signal>.png their spectrograms (log magnitude, 0-8 kHz)

For the ``n`` best, ``n`` median and ``n`` worst items by a key metric (SI-SDRi by
default) the page shows the four signals side by side, each as an ``<audio>`` player
over its spectrogram, with the item's metrics. Every link is relative and the page
has no script, style sheet, font or image from anywhere else: open ``index.html``
from disk (``file://``), or copy the folder anywhere; no server, no network.

matplotlib is imported inside the functions (Agg backend).

Example
-------
>>> import tempfile, torch
>>> out = Path(tempfile.mkdtemp()) / "page"
>>> rows = [{"ID": f"u{i}", "si_sdri": float(i)} for i in range(5)]
>>> tone = 0.1 * torch.sin(torch.arange(8000) / 3.0)
>>> signals = lambda item_id: {name: tone for name in SIGNALS}
>>> page = write_listening_page(out, rows, signals, n=1, summary={"si_sdri": 2.0})
>>> page.name, sorted(p.name for p in (out / "items").glob("u4-*"))[:2]
('index.html', ['u4-estimate.png', 'u4-estimate.wav'])
>>> [group for group, ids in select_items(rows, "si_sdri", 1).items()]
['best', 'median', 'worst']
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from modules.audio import SAMPLE_RATE, save_audio
from modules.files import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

SIGNALS = ("mixture", "reference", "estimate", "target")

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.item { border-top: 2px solid #ddd; padding-top: 0.6em; margin-top: 1em; }
.signals { display: flex; flex-wrap: wrap; gap: 0.8em; }
.signal { width: 250px; } .signal img { width: 250px; display: block; }
.signal audio { width: 250px; } .hist img { width: 300px; }
"""


def select_items(rows: Sequence[Mapping], key: str, n: int,
                 lower_is_better: bool = False) -> dict[str, list[Mapping]]:
    """The ``n`` best, median and worst rows by ``key``, no row chosen twice.

    Rows whose ``key`` is missing or not finite are left out. With fewer than
    ``3 n`` rows every row is shown once (best first, then worst, then median).

    Example
    -------
    >>> rows = [{"ID": str(i), "m": float(i)} for i in range(7)]
    >>> {k: [r["ID"] for r in v] for k, v in select_items(rows, "m", 2).items()}
    {'best': ['6', '5'], 'median': ['4', '3'], 'worst': ['1', '0']}
    """
    ranked = sorted(
        (row for row in rows if row.get(key) is not None and math.isfinite(float(row[key]))),
        key=lambda row: float(row[key]),
        reverse=not lower_is_better,
    )
    best = ranked[:n]
    rest = ranked[len(best):]
    worst = rest[-n:] if n else []
    rest = rest[: len(rest) - len(worst)]
    middle = len(ranked) // 2 - len(best)  # the median's position inside ``rest``
    start = min(max(0, middle - n // 2), max(0, len(rest) - n))
    return {"best": best, "median": rest[start : start + n], "worst": worst}


def _safe(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_spectrogram(path: Path, wav: torch.Tensor, title: str,
                     sample_rate: int = SAMPLE_RATE) -> None:
    """Log-magnitude spectrogram of a ``[T]`` signal as a small PNG (atomic write)."""
    plt = _plt()
    wav = torch.as_tensor(wav).detach().float().reshape(-1)
    if wav.numel() < 512:
        wav = torch.nn.functional.pad(wav, (0, 512 - wav.numel()))
    spec = torch.stft(wav, n_fft=512, hop_length=128, window=torch.hann_window(512),
                      return_complex=True).abs()
    db = 20 * torch.log10(spec + 1e-8)
    db = db.clamp(min=float(db.max()) - 80)
    fig, ax = plt.subplots(figsize=(4.0, 1.8), dpi=80)
    seconds = wav.numel() / sample_rate
    ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
              extent=(0, seconds, 0, sample_rate / 2000))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("s", fontsize=7)
    ax.set_ylabel("kHz", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_histogram(path: Path, values: Sequence[float], metric: str) -> None:
    """Histogram of a metric's finite per-item values as a PNG (atomic write)."""
    plt = _plt()
    finite = [v for v in values if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(4.0, 2.6), dpi=80)
    ax.hist(finite, bins=min(30, max(5, len(finite) // 3)), color="#4a78b5")
    ax.set_title(f"{metric} ({len(finite)} items)", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def _table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{_cell(v)}</td>'
                         for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_listening_page(
    out_dir,
    rows: Sequence[Mapping],
    get_signals: Callable[[str], Mapping[str, torch.Tensor]],
    n: int = 3,
    key: str = "si_sdri",
    lower_is_better: bool = False,
    summary: Mapping | None = None,
    title: str = "Target speaker extraction: listening page",
    extra_tables: Mapping[str, str] | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write the page (see the module docstring); returns the path of ``index.html``.

    Arguments
    ---------
    out_dir : str or Path
        Output folder (created; files of an earlier page there are replaced).
    rows : sequence of dict
        Per-item metrics, each with ``ID``; numeric columns get a histogram.
    get_signals : callable
        ``ID -> {"mixture", "reference", "estimate", "target": [T] tensor}``; a missing
        signal (e.g. no target) is left out of that item.
    n : int
        Items per group (best, median, worst).
    key : str
        Metric that ranks the items (falls back to ``si_sdr``, then the first numeric
        column, when absent).
    lower_is_better : bool
        True for a key where less is better (e.g. the output energy of a
        target-absent test).
    summary : dict, optional
        ``{name: value}`` shown as the summary table.
    extra_tables : dict, optional
        ``{heading: preformatted text}`` shown as ``<pre>`` blocks (failure rates,
        breakdowns, ASR).
    """
    out_dir = Path(out_dir)
    items_dir = out_dir / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    numeric = [name for name in (rows[0] if rows else {})
               if name != "ID" and all(isinstance(r.get(name), (int, float))
                                       and not isinstance(r.get(name), bool) for r in rows)]
    if key not in numeric:
        key = "si_sdr" if "si_sdr" in numeric else (numeric[0] if numeric else key)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary:
        parts.append("<h2>Summary</h2>" + _table(list(summary.items()), ["measure", "value"]))
    for heading, text in (extra_tables or {}).items():
        parts.append(f"<h2>{html.escape(heading)}</h2><pre>{html.escape(text)}</pre>")
    if numeric:
        parts.append("<h2>Per-item distributions</h2><div class='signals hist'>")
        for metric in numeric:
            name = f"hist_{_safe(metric)}.png"
            save_histogram(out_dir / name, [float(r[metric]) for r in rows], metric)
            parts.append(f"<img src='{name}' alt='histogram of {html.escape(metric)}'>")
        parts.append("</div>")
    groups = (select_items(rows, key, n, lower_is_better) if numeric
              else {"items": list(rows[:n])})
    for group, chosen in groups.items():
        parts.append(f"<h2>{group.capitalize()} {len(chosen)} by {html.escape(key)}</h2>")
        for row in chosen:
            parts.append(_item_html(row, get_signals(row["ID"]), items_dir, sample_rate))
    parts.append("</body></html>\n")
    page = out_dir / "index.html"
    atomic_write_text(page, "\n".join(parts))
    logger.info("listening page: %s", page)
    return page


def _item_html(row: Mapping, signals: Mapping[str, torch.Tensor], items_dir: Path,
               sample_rate: int) -> str:
    item_id = str(row["ID"])
    stem = _safe(item_id)
    metrics = [(k, v) for k, v in row.items() if k != "ID"]
    cells = []
    for name in SIGNALS:
        wav = signals.get(name)
        if wav is None:
            continue
        wav = torch.as_tensor(wav).detach().float().reshape(-1).cpu()
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        if peak > 1.0:  # never clip a file written for listening
            wav = wav * (0.99 / peak)
        save_audio(items_dir / f"{stem}-{name}.wav", wav, sample_rate)
        save_spectrogram(items_dir / f"{stem}-{name}.png", wav, name, sample_rate)
        cells.append(
            f"<div class='signal'><b>{name}</b> ({wav.numel() / sample_rate:.2f} s)<br>"
            f"<audio controls preload='auto' src='items/{stem}-{name}.wav'></audio>"
            f"<img src='items/{stem}-{name}.png' alt='{name} spectrogram'></div>"
        )
    return (f"<div class='item'><h3>{html.escape(item_id)}</h3>"
            + _table([[v for _, v in metrics]], [k for k, _ in metrics])
            + f"<div class='signals'>{''.join(cells)}</div></div>")
