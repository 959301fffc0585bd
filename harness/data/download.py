"""Checksummed, atomic downloads and safe archive extraction, plus the official dataset URLs.

Only datasets whose official site still serves the archives are listed; the others
(Caltech101, Stanford Cars, SUN397) must be placed by hand (see ``harness.data.official``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from common.errors import DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: where it comes from, its md5 if published, and what it provides.

    ``provides`` is a path relative to the dataset root whose existence means the
    resource is already in place (an extracted folder or the file itself).
    """

    url: str
    filename: str
    md5: Optional[str]
    provides: str
    extract: bool = False


_VGG = "https://www.robots.ox.ac.uk/~vgg/data"

# md5 values are the ones the dataset sites' files are published with (also pinned by
# torchvision). FGVC-Aircraft has no published checksum: its sha256 is recorded in the
# data report instead.
DATASET_RESOURCES: dict[str, tuple[Resource, ...]] = {
    "flowers102": (
        Resource(f"{_VGG}/flowers/102/102flowers.tgz", "102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", "jpg", True),
        Resource(f"{_VGG}/flowers/102/imagelabels.mat", "imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", "imagelabels.mat"),
        Resource(f"{_VGG}/flowers/102/setid.mat", "setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c", "setid.mat"),
    ),
    "pets": (
        Resource(f"{_VGG}/pets/data/images.tar.gz", "images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c", "images", True),
        Resource(f"{_VGG}/pets/data/annotations.tar.gz", "annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f", "annotations", True),
    ),
    "dtd": (
        Resource(f"{_VGG}/dtd/download/dtd-r1.0.1.tar.gz", "dtd-r1.0.1.tar.gz", "fff73e5086ae6bdbea199a49dfb8a4c1", "dtd", True),
    ),
    "aircraft": (
        Resource(f"{_VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz", "fgvc-aircraft-2013b.tar.gz", None, "fgvc-aircraft-2013b", True),
    ),
    "food101": (
        Resource("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "food-101.tar.gz", "85eeb15f3717b99a5da872d97d918f87", "food-101", True),
    ),
}


def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """``{"md5": ..., "sha256": ...}`` hex digests of a file, read in chunks."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _mismatch(digests: dict[str, str], sha256: Optional[str], md5: Optional[str]) -> Optional[str]:
    if sha256 is not None and digests["sha256"] != sha256.lower():
        return f"sha256 {digests['sha256']} != expected {sha256.lower()}"
    if md5 is not None and digests["md5"] != md5.lower():
        return f"md5 {digests['md5']} != expected {md5.lower()}"
    return None


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: Optional[str] = None,
    md5: Optional[str] = None,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` and return the file's sha256.

    The body is streamed into a temporary file in ``dest``'s folder, checked against
    ``sha256``/``md5`` when given, and moved into place with ``os.replace``: ``dest``
    either is complete and verified or is not touched. A ``dest`` that already exists
    and matches the checksums is not downloaded again.

    Raises:
        DownloadError: the transfer failed, was shorter than announced, or the checksum
            did not match (the temporary file is removed).
    """
    dest = Path(dest)
    for name, value, length in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is not None and (len(value) != length or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise DownloadError(f"{name} must be {length} hex digits, got {value!r}")
    if dest.is_file():
        digests = file_digests(dest)
        problem = _mismatch(digests, sha256, md5)
        if problem is None:
            log.info("%s already present, checksum ok", dest)
            return digests["sha256"]
        log.warning("%s exists but %s; downloading it again", dest, problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    expected_len = response.headers.get("Content-Length") if response.headers else None
                    log.info("downloading %s → %s", url, dest)
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        h_md5.update(chunk)
                        h_sha.update(chunk)
                        received += len(chunk)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(f"downloading {url} failed: {exc}") from exc
        if expected_len is not None and expected_len.isdigit() and int(expected_len) != received:
            raise DownloadError(f"downloading {url}: got {received} bytes, server announced {expected_len}")
        digests = {"md5": h_md5.hexdigest(), "sha256": h_sha.hexdigest()}
        problem = _mismatch(digests, sha256, md5)
        if problem is not None:
            raise DownloadError(f"checksum mismatch for {url}: {problem}; nothing was written to {dest}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digests["sha256"]


def _safe_member_name(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
        raise DownloadError(f"{archive}: refusing to extract {name!r}, it points outside the destination")


def _check_tar_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        _safe_member_name(m.name, archive)
        if m.issym() or m.islnk():
            target = PurePosixPath(m.linkname)
            resolved = target if m.islnk() else PurePosixPath(m.name).parent / target
            if target.is_absolute() or ".." in PurePosixPath(os.path.normpath(str(resolved))).parts:
                raise DownloadError(f"{archive}: refusing link {m.name!r} → {m.linkname!r} outside the destination")
        elif not (m.isfile() or m.isdir()):
            raise DownloadError(f"{archive}: refusing special file {m.name!r}")
    return members


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Extract a tar (any compression) or zip ``archive`` into ``dest``; returns the top-level names.

    Members are extracted into a temporary folder beside ``dest`` first and their
    top-level entries moved in afterwards, so an interrupted extraction leaves no
    half-written folder. Absolute paths, ``..`` components, links leaving ``dest`` and
    device files are refused with :class:`DownloadError` before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tar:
                members = _check_tar_members(tar, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.11.4: members were validated above
                    tar.extractall(tmp, members=members)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _safe_member_name(name, archive)
                zf.extractall(tmp)
        else:
            raise DownloadError(f"{archive}: not a tar or zip archive")
        names = sorted(os.listdir(tmp))
        for name in names:
            if (dest / name).exists():
                raise DownloadError(f"{archive}: {dest / name} already exists; remove it to extract again")
        for name in names:
            os.replace(tmp / name, dest / name)
        return names
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(f"{archive}: corrupt archive ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_resources(name: str, root: str | os.PathLike, *, keep_archives: bool = False) -> list[dict[str, object]]:
    """Download and extract the official files of dataset ``name`` into ``root`` when missing.

    Returns one record per file fetched (url, file, sha256, whether an md5 was checked),
    for the data report. Resources already in place are left alone.

    Raises:
        DownloadError: ``name`` has no downloadable resources, or a download failed.
    """
    if name not in DATASET_RESOURCES:
        raise DownloadError(f"dataset {name!r} cannot be downloaded automatically")
    root = Path(root)
    records: list[dict[str, object]] = []
    for res in DATASET_RESOURCES[name]:
        if (root / res.provides).exists():
            continue
        target = root / res.filename
        sha = download_file(res.url, target, md5=res.md5)
        if res.md5 is None:
            log.warning("%s has no published checksum; recorded sha256 %s in the data report", res.url, sha)
        records.append({"url": res.url, "file": str(target), "sha256": sha, "md5_verified": res.md5 is not None})
        if res.extract:
            extract_archive(target, root)
            if not keep_archives:
                target.unlink(missing_ok=True)
    return records
