"""download_model.py against a local HTTP server serving a real (tiny) model archive."""

from __future__ import annotations

import errno
import hashlib
import http.server
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch

from modules.inference import TargetSpeakerExtractor
from modules.model_dir import write_model_dir
from modules.spex_plus import SpExPlus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "download_model.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("download_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dm = _load_script()


@pytest.fixture(scope="module")
def release(tmp_path_factory, tiny_args):
    """A tiny random SpEx+ model directory packed as NAME.tar.gz (bytes, sha256, model)."""
    root = tmp_path_factory.mktemp("release")
    torch.manual_seed(0)
    model = SpExPlus(**tiny_args, num_speakers=2).eval()
    write_model_dir(model, root / "tiny-tse", metrics={"si_sdr": 1.0})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root / "tiny-tse", arcname="tiny-tse")
    data = buffer.getvalue()
    return {"data": data, "sha256": hashlib.sha256(data).hexdigest(), "model": model}


class Server:
    """http.server on 127.0.0.1 (random port) in a thread, with switchable behaviour.

    Modes: ``range`` (honours Range), ``norange`` (ignores Range), ``drop_once``
    (first full request sends half the body then closes; Range honoured),
    ``drop_once_norange``, ``corrupt`` (wrong bytes), ``missing`` (404).
    """

    def __init__(self, data: bytes):
        self.data, self.mode, self.requests = data, "range", []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                data, mode = server.data, server.mode
                if mode == "missing":
                    self.send_error(404, "Not Found")
                    return
                if mode == "corrupt":
                    data = bytes(len(data))
                start = 0
                header = self.headers.get("Range")
                if header and mode in ("range", "drop_once"):
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mode.startswith("drop_once") and not getattr(server, "dropped", False):
                    server.dropped = True
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    return  # HTTP/1.0: the connection closes mid-file
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tiny-tse.tar.gz"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(release):
    server = Server(release["data"])
    yield server
    server.close()


def manifest(tmp_path, url, sha256, size):
    path = tmp_path / "models.json"
    entry = {"url": url, "sha256": sha256, "size": size, "description": "tiny test model"}
    placeholder = {"url": None, "sha256": None, "size": None}
    path.write_text(json.dumps({"models": {"tiny": entry, "future": placeholder}}))
    return path


def run(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True, text=True, timeout=1800,
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def check_model(dest: Path, release):
    tse = TargetSpeakerExtractor.from_hparams(dest, run_opts={"device": "cpu"})
    mix, ref = torch.randn(8000), torch.randn(9000)
    expected = TargetSpeakerExtractor.from_model(release["model"]).extract(mix, ref)
    torch.testing.assert_close(tse.extract(mix, ref), expected, atol=1e-6, rtol=0)


def test_download_by_name_then_already_present(server, release, tmp_path):
    models = manifest(tmp_path, server.url, release["sha256"], len(release["data"]))
    dest = tmp_path / "models" / "tiny"
    result = run("--name", "tiny", "--manifest", models, "--dest", dest)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"model ready in {dest}"
    check_model(dest, release)
    assert leftovers(dest.parent) == []
    again = run("--name", "tiny", "--manifest", models, "--dest", dest)
    assert again.returncode == 0 and "already holds this model" in again.stderr
    assert len(server.requests) == 1


def test_resume_after_dropped_connection(server, release, tmp_path):
    server.mode = "drop_once"
    dest = tmp_path / "tiny"
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", dest)
    assert result.returncode == 0, result.stderr
    half = (len(release["data"])) // 2
    assert server.requests == [None, f"bytes={half}-"]
    check_model(dest, release)


def test_restart_when_server_ignores_range(server, release, tmp_path):
    server.mode = "drop_once_norange"
    dest = tmp_path / "tiny"
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", dest)
    assert result.returncode == 0, result.stderr
    assert "ignores resume requests" in result.stderr
    check_model(dest, release)


def test_resume_partial_file_from_earlier_run(server, release, tmp_path):
    dest = tmp_path / "tiny"
    part = tmp_path / f".tiny.{release['sha256'][:16]}.tar.gz.part"
    part.write_bytes(release["data"][:1000])
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", dest)
    assert result.returncode == 0, result.stderr
    assert server.requests == ["bytes=1000-"] and not part.exists()
    check_model(dest, release)


def test_checksum_mismatch_leaves_nothing(server, release, tmp_path):
    server.mode = "corrupt"
    dest = tmp_path / "tiny"
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", dest)
    assert result.returncode == dm.EXIT_CHECKSUM
    assert "checksum mismatch" in result.stderr and "deleted" in result.stderr
    assert not dest.exists() and leftovers(tmp_path) == []


def test_network_errors(server, release, tmp_path):
    server.mode = "missing"
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", tmp_path / "a")
    assert result.returncode == dm.EXIT_NETWORK and "HTTP error 404" in result.stderr
    closed = "http://127.0.0.1:9/none.tar.gz"  # discard port: connection refused
    result = run("--url", closed, "--sha256", release["sha256"], "--dest", tmp_path / "b",
                 "--retries", "0", "--timeout", "5")
    assert result.returncode == dm.EXIT_NETWORK and "network error" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_placeholder_and_unknown_names(tmp_path):
    models = manifest(tmp_path, "http://x/y.tar.gz", "0" * 64, 10)
    result = run("--name", "future", "--manifest", models)
    assert result.returncode == 2 and "not published yet" in result.stderr
    result = run("--name", "nope", "--manifest", models)
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr
    repo = json.loads((REPO_ROOT / "models.json").read_text())["models"]
    assert repo and all(set(entry) >= {"url", "sha256", "size"} for entry in repo.values())


def test_dest_in_the_way(server, release, tmp_path):
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", dest)
    assert result.returncode == 2 and "--force" in result.stderr
    assert (dest / "notes.txt").read_text() == "mine"
    result = run("--url", server.url, "--sha256", release["sha256"], "--dest", dest, "--force")
    assert result.returncode == 0 and not (dest / "notes.txt").exists()


@pytest.mark.parametrize(
    ("code", "message"), [(errno.ENOSPC, "disk full"), (errno.EACCES, "permission denied")]
)
def test_disk_errors(server, release, tmp_path, monkeypatch, code, message):
    class FailingFile(io.BytesIO):
        def write(self, data):
            raise OSError(code, "simulated")

    monkeypatch.setattr(dm, "open", lambda *args, **kwargs: FailingFile(), raising=False)
    with pytest.raises(dm.DownloadError, match=message) as error:
        dm.download_model(url=server.url, sha256=release["sha256"], dest=tmp_path / "tiny")
    assert error.value.status == dm.EXIT_DISK
    assert not (tmp_path / "tiny").exists()


def test_not_enough_space(server, release, tmp_path, monkeypatch):
    models = manifest(tmp_path, server.url, release["sha256"], len(release["data"]))
    monkeypatch.setattr(dm.shutil, "disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(dm.DownloadError, match="not enough disk space"):
        dm.download_model(name="tiny", manifest=models, dest=tmp_path / "tiny")
    assert server.requests == []


def test_pack_then_download(release, tmp_path):
    """--pack makes an archive whose printed entry downloads back to the same model."""
    model_dir = tmp_path / "src" / "tiny"
    write_model_dir(release["model"], model_dir)
    archive = tmp_path / "tiny-v1.tar.gz"
    result = run("--pack", model_dir, "--out", archive)
    assert result.returncode == 0, result.stderr
    entry = json.loads("{" + result.stdout.split("\n", 1)[1] + "}")["tiny-v1"]
    assert entry["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    server = Server(archive.read_bytes())
    try:
        models = manifest(tmp_path, server.url, entry["sha256"], entry["size"])
        dest = tmp_path / "got"
        result = run("--name", "tiny", "--manifest", models, "--dest", dest)
        assert result.returncode == 0, result.stderr
        check_model(dest, release)
    finally:
        server.close()


def test_downloader_needs_only_the_standard_library():
    """download_model.py imports neither torch nor speechbrain (its helpers are stdlib-only)."""
    code = ("import sys, runpy; sys.argv = ['download_model.py', '--help']\n"
            "try:\n    runpy.run_path('download_model.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({'torch', 'speechbrain', 'numpy', 'yaml'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=1800)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
