"""Fetching the image sets' official files, only when the user asks (`landscape train --download`).

Files go where the loaders look first (images.FOLDERS): DIR/mnist/, DIR/kmnist/, DIR/svhn/, and the
CIFAR archives unpacked into DIR (cifar-10-batches-py/, cifar-100-python/). Every file is checked
against its published MD5 before it is used; a partial download never takes the final name.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from landscape.errors import WorkFailed


@dataclass(frozen=True)
class Source:
    base: str                  # URL prefix of the files
    files: dict[str, str]      # file name -> MD5 of the published file
    into: str                  # folder under --data-dir
    archive: bool = False      # a .tar.gz to unpack into `into`


_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")
SOURCES = {
    "mnist": Source("https://ossci-datasets.s3.amazonaws.com/mnist/", dict(zip(_IDX, (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))), "mnist"),
    "kmnist": Source("http://codh.rois.ac.jp/kmnist/dataset/kmnist/", dict(zip(_IDX, (
        "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
        "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"))), "kmnist"),
    "svhn": Source("http://ufldl.stanford.edu/housenumbers/", {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}, "svhn"),
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/", {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}, ".", archive=True),
    "cifar100": Source("https://www.cs.toronto.edu/~kriz/", {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}, ".", archive=True),
}


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(url: str, path: Path, md5: str) -> None:
    """Download url to path via path.part, verified against md5."""
    part = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise WorkFailed(f"downloading {url} failed: {err}") from None
    if md5_of(part) != md5:
        part.unlink()
        raise WorkFailed(f"{url} did not match its published MD5 {md5}; try again later")
    part.replace(path)


def unpack(archive: Path, into: Path) -> None:
    """Extract a tar.gz, refusing members that are links or would land outside `into`."""
    into = into.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            target = (into / m.name).resolve()
            if not (m.isfile() or m.isdir()) or not target.is_relative_to(into):
                raise WorkFailed(f"{archive} holds an unexpected member {m.name!r}; not unpacked")
        # (the "data" filter, where this Python has it, enforces the same again)
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **extra)


def fetch(name: str, data_dir: Path) -> None:
    """Download (and unpack) the official files of `name` under data_dir."""
    source = SOURCES[name]
    folder = data_dir.expanduser() / source.into
    folder.mkdir(parents=True, exist_ok=True)
    for file, md5 in source.files.items():
        path = folder / file
        if not path.is_file():
            print(f"landscape: downloading {source.base}{file} to {folder}", file=sys.stderr)
            fetch_file(source.base + file, path, md5)
        if source.archive:
            unpack(path, folder)
