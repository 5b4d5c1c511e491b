"""The listening page in a real browser: headless Debian chromium loads every audio and image.

Chromium is installed with ``apt-get install -y chromium`` where the test runs as root
with apt (CI containers); elsewhere, and where the install fails, the test is skipped
with the reason. The page is opened from disk (``file://``) with networking features
off and a fresh profile; a copy of it with a small script appended reports, into the
DOM that ``--dump-dom`` prints, how many ``<audio>`` elements have loaded their
metadata (a duration) and how many ``<img>`` elements decoded (a natural width).
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

from modules.listening_page import SIGNALS, write_listening_page

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
CHECK_SCRIPT = """
<script>
(function () {
  function report() {
    var audios = Array.prototype.slice.call(document.querySelectorAll('audio'));
    var images = Array.prototype.slice.call(document.querySelectorAll('img'));
    var out = document.getElementById('media-check');
    if (!out) { out = document.createElement('pre'); out.id = 'media-check';
                document.body.appendChild(out); }
    out.textContent = 'MEDIA' + '-CHECK ' + JSON.stringify({
      audio: audios.length,
      bad_audio: audios.filter(function (a) { return a.error || !(a.duration > 0); })
                       .map(function (a) { return a.getAttribute('src'); }),
      images: images.length,
      bad_images: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                        .map(function (i) { return i.getAttribute('src'); })});
  }
  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('audio').forEach(function (a) {
      a.addEventListener('loadedmetadata', report); a.addEventListener('error', report);
    });
    report();
  });
  window.addEventListener('load', report);
})();
</script>
"""


def find_or_install_chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get): "
                    "apt-get install chromium to run this test")
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"apt-get install chromium failed: {result.stderr.strip()[-300:]}")
    return shutil.which("chromium")


def media_check(chromium: str, page, profile) -> dict:
    """Open ``page`` (plus the check script) headless; the JSON the script left in the DOM."""
    checked = page.parent / "_media_check.html"
    checked.write_text(page.read_text() + CHECK_SCRIPT)
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=1800,
    )
    checked.unlink()
    found = re.findall(r"MEDIA-CHECK (\{.*?\})</pre>", result.stdout)
    assert found, f"no check result in the DOM (rc {result.returncode}): {result.stderr[-500:]}"
    return json.loads(found[-1].replace("&quot;", '"'))


@pytest.fixture(scope="module")
def chromium():
    return find_or_install_chromium()


@pytest.fixture
def page(tmp_path):
    rows = [{"ID": f"u{i}", "si_sdri": float(i), "si_sdr": i / 2} for i in range(7)]
    gen = torch.Generator().manual_seed(0)
    speechy = 0.1 * torch.randn(24000, generator=gen) * torch.sin(torch.arange(24000) / 900.0)
    return write_listening_page(tmp_path / "page", rows,
                                lambda item_id: {name: speechy for name in SIGNALS}, n=1,
                                summary={"si_sdri (dB)": 3.0})


def test_every_audio_loads_and_every_image_decodes(chromium, page, tmp_path):
    result = media_check(chromium, page, tmp_path / "profile")
    assert result["audio"] == 3 * 4 and result["bad_audio"] == []
    assert result["images"] == 3 * 4 + 2 and result["bad_images"] == []


def test_a_broken_file_is_caught(chromium, page, tmp_path):
    wav = next((page.parent / "items").glob("*-estimate.wav"))
    wav.write_bytes(b"RIFF broken")
    png = next((page.parent / "items").glob("*-target.png"))
    png.write_bytes(b"\x89PNG broken")
    result = media_check(chromium, page, tmp_path / "profile")
    assert result["bad_audio"] == [f"items/{wav.name}"]
    assert result["bad_images"] == [f"items/{png.name}"]


def test_screenshot(chromium, page, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1000,800", page.as_uri()],
                   capture_output=True, timeout=1800)
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"
