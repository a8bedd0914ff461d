"""Download / verify / safe-extract helpers, against a loopback HTTP server and file:// URLs."""
import functools
import gzip
import hashlib
import http.server
import shutil
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from repscope.training.data import load_mnist, load_omniglot
from repscope.training.data.fetch import download, file_digest, safe_extract, verify
from repscope.training.errors import DataError

SMALL1 = "images_background_small1.zip"


def _listing(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (www folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.endswith("/short.bin"):  # claims 100 bytes, sends 10
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_verify_against_hashlib(data_root):
    path = data_root / "omniglot" / SMALL1
    data = path.read_bytes()
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()
    verify(path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    with pytest.raises(DataError, match="Checksum mismatch.*expected sha256 0+, found"):
        verify(path, sha256="0" * 64)
    with pytest.raises(DataError, match="Size mismatch"):
        verify(path, size=len(data) + 1)


def test_download_over_http_and_checksum_mismatch(server, data_root, tmp_path):
    www, url = server
    shutil.copy(data_root / "omniglot" / SMALL1, www / SMALL1)
    dest = tmp_path / "dl" / SMALL1
    got = download(f"{url}/{SMALL1}", dest, sha256=file_digest(data_root / "omniglot" / SMALL1))
    assert got.read_bytes() == (data_root / "omniglot" / SMALL1).read_bytes()
    assert _listing(tmp_path / "dl") == [SMALL1]

    bad = tmp_path / "dl2" / SMALL1
    with pytest.raises(DataError, match=r"Download of 'http://127\.0\.0\.1.*Checksum mismatch"):
        download(f"{url}/{SMALL1}", bad, sha256="0" * 64)
    assert _listing(tmp_path / "dl2") == []  # nothing half-written


def test_download_truncated_missing_and_file_url(server, tmp_path):
    www, url = server
    with pytest.raises(DataError, match="truncated: Content-Length 100 bytes, received 10"):
        download(f"{url}/short.bin", tmp_path / "out" / "short.bin")
    with pytest.raises(DataError, match="could not read the URL.*404"):
        download(f"{url}/absent.zip", tmp_path / "out" / "absent.zip")
    assert _listing(tmp_path / "out") == []
    (www / "a.bin").write_bytes(b"hello")
    assert download((www / "a.bin").as_uri(), tmp_path / "f" / "a.bin", size=5).read_bytes() \
        == b"hello"


def test_load_omniglot_downloads_when_missing(server, data_root, tmp_path, monkeypatch):
    www, url = server
    (www / "omniglot").mkdir()
    shutil.copy(data_root / "omniglot" / SMALL1, www / "omniglot" / SMALL1)
    monkeypatch.setenv("REPSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REPSCOPE_DOWNLOAD_URL", url)
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(DataError, match="not found; looked for"):
        load_omniglot(empty, archives=("images_background_small1",), download=False)
    chars = load_omniglot(empty, archives=("images_background_small1",), cache=False)
    assert len(chars) == 136 and chars.meta["archives"]["images_background_small1"][
        "sha256"].startswith("f38eb80f")
    assert _listing(tmp_path / "cache") == ["data", "data/omniglot", f"data/omniglot/{SMALL1}"]


def test_load_omniglot_rejects_tampered_download(server, data_root, tmp_path, monkeypatch):
    www, url = server
    data = bytearray((data_root / "omniglot" / SMALL1).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (www / SMALL1).write_bytes(bytes(data))
    monkeypatch.setenv("REPSCOPE_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{SMALL1}.*Checksum mismatch.*expected sha256 f38eb80f"):
        load_omniglot(empty, archives=("images_background_small1",), base_url=url,
                      cache=False)
    assert _listing(tmp_path / "cache") == ["data", "data/omniglot"]


def test_mnist_download_checks_uncompressed_bytes(server, data_root, tmp_path, monkeypatch):
    """A mirror's gzip wrapping differs (here: another mtime and level); still accepted."""
    www, url = server
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = gzip.decompress((data_root / "mnist" / f"{name}.gz").read_bytes())
        rewrapped = gzip.compress(raw, compresslevel=1, mtime=12345)
        assert rewrapped != (data_root / "mnist" / f"{name}.gz").read_bytes()
        (www / f"{name}.gz").write_bytes(rewrapped)
    monkeypatch.setenv("REPSCOPE_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty_root"
    empty.mkdir()
    x, y = load_mnist(empty, "test", base_url=url)
    assert x.shape == (10000, 28, 28) and np.bincount(y)[0] == 980

    raw = bytearray(gzip.decompress((data_root / "mnist" / "t10k-images-idx3-ubyte.gz")
                                    .read_bytes()))
    raw[5000] ^= 1
    (www / "bad").mkdir()
    (www / "bad" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    monkeypatch.setenv("REPSCOPE_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(DataError, match="expected md5 2646ac647ad5339dbf082846283269ea"):
        load_mnist(empty, "test", base_url=f"{url}/bad")
    assert not list((tmp_path / "cache2").rglob("*.gz*"))


def _zip_with(path: Path, name: str, data=b"x", *, symlink=False):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("top/ok.txt", "fine")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, data)
    return path


@pytest.mark.parametrize("name, symlink, reason", [
    ("../escape.txt", False, "'..' component"),
    ("top/../../escape.txt", False, "'..' component"),
    ("/etc/escape.txt", False, "absolute path"),
    ("C:/escape.txt", False, "absolute path"),
    ("top/link", True, "symbolic link entry"),
])
def test_safe_extract_refuses_unsafe_members(tmp_path, name, symlink, reason):
    archive = _zip_with(tmp_path / "evil.zip", name, b"/etc/passwd" if symlink else b"x",
                        symlink=symlink)
    with pytest.raises(DataError, match=f"evil.zip.*{name!r}.*{reason}"):
        safe_extract(archive, tmp_path / "out")
    assert _listing(tmp_path) == ["evil.zip"]
    assert not (tmp_path.parent / "escape.txt").exists()


def test_safe_extract_real_archive_and_corrupt_member(tmp_path, data_root):
    out = safe_extract(data_root / "omniglot" / "all_runs.zip", tmp_path / "runs")
    with zipfile.ZipFile(data_root / "omniglot" / "all_runs.zip") as z:
        files = [n for n in z.namelist() if not n.endswith("/")]
        assert (out / files[7]).read_bytes() == z.read(files[7])
    assert len([p for p in out.rglob("*") if p.is_file()]) == len(files)
    with pytest.raises(DataError, match="already exists"):
        safe_extract(data_root / "omniglot" / "all_runs.zip", out)

    # Flip a byte inside a stored member's data: the CRC check fails while extracting.
    with zipfile.ZipFile(tmp_path / "c.zip", "w", zipfile.ZIP_STORED) as z:
        z.writestr("top/a.txt", b"A" * 1000)
        z.writestr("top/b.txt", b"B" * 1000)
    data = bytearray((tmp_path / "c.zip").read_bytes())
    data[data.index(b"B" * 1000) + 10] = ord("C")
    (tmp_path / "c.zip").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"Cannot extract .*c\.zip.*CRC"):
        safe_extract(tmp_path / "c.zip", tmp_path / "c_out")
    assert not (tmp_path / "c_out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
