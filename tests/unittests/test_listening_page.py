"""modules/listening_page.py: item selection and a page whose every link resolves locally."""

import re

import soundfile as sf
import torch

from modules.listening_page import SIGNALS, select_items, write_listening_page


def test_select_items_no_duplicates_and_nan_left_out():
    rows = [{"ID": str(i), "m": float(i)} for i in range(4)] + [{"ID": "x", "m": float("nan")}]
    groups = select_items(rows, "m", 2)
    chosen = [r["ID"] for rows in groups.values() for r in rows]
    assert len(chosen) == len(set(chosen)) == 4 and "x" not in chosen
    assert [r["ID"] for r in groups["best"]] == ["3", "2"]
    big = select_items([{"ID": str(i), "m": float(i)} for i in range(101)], "m", 3)
    assert [r["ID"] for r in big["median"]] == ["51", "50", "49"]


def test_page_is_self_contained(tmp_path):
    rows = [{"ID": f"spk/{i}", "si_sdri": float(i), "pesq": 1.0 + i / 10} for i in range(9)]
    tone = 0.5 * torch.sin(torch.arange(16000) / 4.0)
    page = write_listening_page(
        tmp_path / "page", rows,
        lambda item_id: {name: 3.0 * tone if name == "estimate" else tone for name in SIGNALS},
        n=2, summary={"si_sdri (dB)": 4.0}, extra_tables={"Failures": "wrong_speaker 0.1"},
    )
    text = page.read_text()
    links = re.findall(r"(?:src|href)='([^']+)'", text)
    assert links and not [link for link in links if "//" in link or link.startswith("/")]
    for link in links:
        assert (page.parent / link).is_file(), link
    assert text.count("<audio") == 6 * 4  # 2 best, 2 median, 2 worst x 4 signals
    assert "hist_si_sdri.png" in text and "hist_pesq.png" in text and "Failures" in text
    wav, rate = sf.read(page.parent / "items" / "spk_8-estimate.wav")
    assert rate == 16000 and abs(wav).max() <= 0.99 + 1e-4  # scaled, never clipped
