"""Checksummed, atomic download: stream into a temp file beside the destination, check the MD5, then
`alexnet.base.files.atomic_path` moves it into place (the same pattern as timm's atomic checkpoint save). A reader
therefore sees either no file or the whole verified file, never a partial one, even when several ranks download at
once or the user presses Ctrl-C. A progress bar (bytes, from Content-Length) goes to stderr."""

import hashlib
import http.client
import logging
import sys
from pathlib import Path
from urllib.request import urlopen

from tqdm import tqdm

from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import atomic_path

CHUNK = 1 << 20  # bytes per read: 1 MiB keeps memory flat for the 163 MiB CIFAR-10 archive
TIMEOUT = 60  # seconds without data before a mirror counts as failed

log = logging.getLogger(__name__)


def download(urls: list[str], dest: Path, md5: str) -> Path:
    """Fetch `dest` from the first mirror in `urls` that serves bytes with this MD5; returns `dest`.

    Every failure (network, checksum, interruption) leaves nothing behind and raises a one-line AlexNetError
    listing why each mirror failed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        log.info("downloading %s -> %s", url, dest)
        try:
            _fetch(url, dest, md5)
            return dest
        except KeyboardInterrupt as e:
            # The temp file is already gone; don't try the next mirror, the user asked to stop.
            raise AlexNetError(f"download of {dest.name} from {url} interrupted; nothing was saved") from e
        except (OSError, ValueError, http.client.HTTPException, _ChecksumError) as e:
            # URLError/HTTPError/timeouts are OSErrors; a malformed response (IncompleteRead...) an HTTPException
            failures.append(f"{url}: {one_line(e)}")
    raise AlexNetError(f"could not download {dest.name}: {'; '.join(failures) or 'no URL given'}")


class _ChecksumError(Exception):
    pass


def _progress(dest: Path, response) -> tqdm:
    """A byte count on stderr (stdout is the run's own output), as torchvision's downloads show one; the total
    from Content-Length where the server sends it."""
    size = getattr(response, "headers", {}).get("Content-Length")
    return tqdm(total=int(size) if size and size.isdigit() else None, desc=f"downloading {dest.name}", unit="B",
                unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=True, dynamic_ncols=True)


def _fetch(url: str, dest: Path, md5: str) -> None:
    # A unique temp file beside `dest` (`os.replace` is atomic only within one filesystem, and concurrent
    # downloaders, one per DDP rank, must not write into each other's file), removed on any failure.
    with atomic_path(dest) as tmp:
        digest = hashlib.md5(usedforsecurity=False)
        with open(tmp, "wb") as out, urlopen(url, timeout=TIMEOUT) as response, _progress(dest, response) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != md5.lower():
            raise _ChecksumError(f"MD5 {digest.hexdigest()} does not match expected {md5}")
