"""Checksummed atomic downloads (file:// and a loopback HTTP server) and safe extraction."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from harness.data import download_file, extract_archive, load_dataset
from harness.data import download as download_mod
from common.errors import DatasetError, DownloadError

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: several read chunks


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields ``(folder, base_url)``."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_file_url_with_checksums(source, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    sha = download_file(source.as_uri(), dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                        md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD and sha == hashlib.sha256(PAYLOAD).hexdigest()
    assert _leftovers(dest.parent) == ["blob.bin"]
    # Present and matching: not fetched again (the source may even be gone).
    source.unlink()
    assert download_file(source.as_uri(), dest, md5=hashlib.md5(PAYLOAD).hexdigest()) == sha


def test_download_checksum_mismatch_leaves_nothing(source, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DownloadError, match="md5 .* != expected 0{32}"):
        download_file(source.as_uri(), dest, md5="0" * 32)
    assert _leftovers(dest.parent) == []


def test_download_mismatch_keeps_previous_file(source, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"old contents")
    with pytest.raises(DownloadError, match="sha256"):
        download_file(source.as_uri(), dest, sha256="f" * 64)
    assert dest.read_bytes() == b"old contents"
    assert _leftovers(tmp_path) == ["blob.bin", "src"]


def test_download_over_http(http_root, tmp_path):
    www, base = http_root
    (www / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dl" / "blob.bin"
    download_file(f"{base}/blob.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="failed"):
        download_file(f"{base}/missing.bin", tmp_path / "dl" / "missing.bin")
    assert _leftovers(dest.parent) == ["blob.bin"]


def test_interrupted_download_leaves_no_partial_file(source, tmp_path, monkeypatch):
    class Exploding(io.BytesIO):
        headers = {}

        def read(self, n=-1):
            if self.tell() > 100_000:
                raise ConnectionResetError("connection reset")
            return super().read(min(n, 50_000))

    monkeypatch.setattr(download_mod.urllib.request, "urlopen", lambda url, timeout: Exploding(PAYLOAD))
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DownloadError, match="connection reset"):
        download_file("http://example.invalid/blob.bin", dest)
    assert _leftovers(dest.parent) == []


def test_bad_checksum_argument(tmp_path):
    with pytest.raises(DownloadError, match="md5 must be 32 hex digits"):
        download_file("file:///x", tmp_path / "x", md5="abc")


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_extract_tar_and_zip(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    assert extract_archive(archive, tmp_path / "out") == ["top"]
    assert (tmp_path / "out" / "top" / "sub" / "y.txt").read_bytes() == b"y"
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("z/z.txt", "zz")
    assert extract_archive(tmp_path / "b.zip", tmp_path / "out") == ["z"]
    assert _leftovers(tmp_path / "out") == ["top", "z"]


@pytest.mark.parametrize("members, links", [
    ({"../evil.txt": b"!"}, None),
    ({"/abs/evil.txt": b"!"}, None),
    ({"ok/a.txt": b"a"}, {"ok/link": "../../etc/passwd"}),
])
def test_extract_refuses_escaping_members(tmp_path, members, links):
    archive = _tar(tmp_path / "evil.tar.gz", members, links)
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="refusing"):
        extract_archive(archive, out)
    assert _leftovers(out) == [] and not (tmp_path / "evil.txt").exists()


def test_extract_refuses_escaping_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../evil.txt", "!")
    with pytest.raises(DownloadError, match="refusing"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_official_table_lists_the_archives():
    table = download_mod.DATASET_RESOURCES
    assert set(table) == {"flowers102", "pets", "dtd", "aircraft", "food101"}
    for resources in table.values():
        for r in resources:
            assert r.url.startswith(("https://", "http://")) and r.url.endswith(r.filename)
            assert r.md5 is None or len(r.md5) == 32


def test_load_dataset_download_uses_the_table(tmp_path, monkeypatch, write_image):
    """``download=True`` fetches, verifies, extracts and records; here the table points at local files."""
    src = tmp_path / "src"
    root = src / "dtd"
    rows = {"train": [], "val": [], "test": []}
    for i in range(6):
        rel = f"dotted/dotted_{i:04d}.jpg"
        write_image(root / "images" / rel, seed=i)
        rows[("train", "val", "test")[i % 3]].append(rel)
    (root / "labels").mkdir()
    for split, r in rows.items():
        (root / "labels" / f"{split}1.txt").write_text("\n".join(r) + "\n")
    archive = tmp_path / "dtd-r1.0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="dtd")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    fake = download_mod.Resource(archive.as_uri(), "dtd-r1.0.1.tar.gz", md5, "dtd", True)
    monkeypatch.setitem(download_mod.DATASET_RESOURCES, "dtd", (fake,))
    data_root = tmp_path / "data"
    with pytest.raises(DatasetError, match="download=True"):
        load_dataset("dtd", data_root)
    ds = load_dataset("dtd", data_root, download=True)
    assert ds.classes == ("dotted",) and len(ds.test) == 2
    assert ds.report.downloads[0]["md5_verified"] is True
    assert _leftovers(data_root) == ["dtd"]  # archive removed after extraction, no temp folders
    bad = download_mod.Resource(archive.as_uri(), "dtd-r1.0.1.tar.gz", "0" * 32, "dtd", True)
    monkeypatch.setitem(download_mod.DATASET_RESOURCES, "dtd", (bad,))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("dtd", tmp_path / "data2", download=True)
    assert _leftovers(tmp_path / "data2") == []
