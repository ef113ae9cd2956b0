"""Checksummed atomic downloads (alexnet.data.download): mirrors, checksums, interruptions, file modes."""

import hashlib
import http.client
import io
import os
import stat
from pathlib import Path

import pytest
from helpers import one_line_error

from alexnet.base.errors import AlexNetError
from alexnet.data import download as download_mod
from alexnet.data.download import download


def test_download_good_and_bad_checksum(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(3 << 20))  # 3 MiB: several 1 MiB chunks
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download([(tmp_path / "missing").as_uri(), source.as_uri()], dest, md5) == dest  # second mirror
    assert dest.read_bytes() == source.read_bytes() and os.listdir(dest.parent) == ["file.bin"]
    other = tmp_path / "out" / "other.bin"
    with pytest.raises(AlexNetError) as excinfo:
        download([source.as_uri()], other, "0" * 32)
    one_line_error(excinfo, "other.bin", "MD5", md5)
    assert os.listdir(dest.parent) == ["file.bin"]  # no other.bin, no temp file


@pytest.mark.parametrize("interruption", [ConnectionResetError, KeyboardInterrupt])
def test_download_interrupted_leaves_nothing(tmp_path, monkeypatch, interruption):
    payload = bytes(range(256)) * 8192  # 2 MiB: the connection dies after the first 1 MiB chunk
    dest = tmp_path / "out" / "data.tar.gz"
    at_death = []

    class Dying(io.BytesIO):  # stands in for the HTTP response
        def read(self, size=-1):
            if self.tell() >= download_mod.CHUNK:
                at_death.extend(dest.parent.iterdir())
                raise interruption("connection lost midway")
            return super().read(size)

    monkeypatch.setattr(download_mod, "urlopen", lambda url, timeout: Dying(payload))
    with pytest.raises(AlexNetError) as excinfo:
        download(["https://example.invalid/data.tar.gz"], dest, hashlib.md5(payload).hexdigest())
    one_line_error(excinfo, "data.tar.gz", "interrupted" if interruption is KeyboardInterrupt else "connection lost")
    assert len(at_death) == 1 and ".tmp" in at_death[0].name  # the partial data went to a temp file...
    assert os.listdir(dest.parent) == []  # ...which is gone, and data.tar.gz never appeared


def test_download_gets_the_mode_open_would_give(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    old = os.umask(0o027)
    try:
        dest = download([source.as_uri()], tmp_path / "out" / "file.bin", hashlib.md5(b"payload").hexdigest())
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640  # 0o666 & ~umask, not mkstemp's 0o600


def test_download_bad_http_response_tries_the_next_mirror(tmp_path, monkeypatch):
    payload = b"the real bytes"

    class Broken(io.BytesIO):  # a server that closes the connection before Content-Length bytes
        def read(self, size=-1):
            raise http.client.IncompleteRead(b"the", len(payload) - 3)

    monkeypatch.setattr(download_mod, "urlopen",
                        lambda url, timeout: Broken() if "bad" in url else io.BytesIO(payload))
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download(["https://bad.invalid/file.bin", "https://good.invalid/file.bin"], dest, md5) == dest
    assert dest.read_bytes() == payload
    with pytest.raises(AlexNetError) as excinfo:
        download(["https://bad.invalid/other.bin"], tmp_path / "out" / "other.bin", md5)
    one_line_error(excinfo, "other.bin", "https://bad.invalid/other.bin", "IncompleteRead(3 bytes read, 11 more")
    assert os.listdir(dest.parent) == ["file.bin"]  # no other.bin, no temp file


def test_download_unreachable_is_one_line():
    with pytest.raises(AlexNetError) as excinfo:
        download(["file:///nonexistent/a.gz", "notascheme://x"], Path(os.environ["ALEXNET_CACHE"]) / "a.gz", "0")
    one_line_error(excinfo, "a.gz", "file:///nonexistent/a.gz", "notascheme://x")



class Response(io.BytesIO):
    """An HTTP response as urlopen returns it: the body, and the headers that say its length."""

    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = http.client.HTTPMessage()
        self.headers["Content-Length"] = str(len(payload))


def test_download_shows_a_progress_bar_on_stderr(tmp_path, monkeypatch, capsys):
    payload = bytes(range(256)) * (3 << 12)  # 3 MiB: three chunks
    monkeypatch.setattr(download_mod, "urlopen", lambda url, timeout: Response(payload))
    dest = download(["https://mirror.invalid/file.bin"], tmp_path / "file.bin", hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is the run's own
    final = captured.err.replace("\r", "\n").strip().splitlines()[-1]  # the bar's last state
    assert final.startswith("downloading file.bin: 100%") and "| 3.00M/3.00M " in final, captured.err  # MiB
