"""Where raw MovieLens files come from, in order: a local path, the cache, GroupLens, a mirror.

Everything that lands in the cache is written to a temporary name and renamed only once complete and
verified, so an interrupted download or a bad checksum never leaves a usable-looking entry behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from recsys.errors import RecsysError

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
TIMEOUT_S = 30  # per network read; an unreachable host fails over to the next source


@dataclass
class Source:
    url: str
    sha256: str | None = None  # pinned where known; see `verify_archive`
    mirror: dict = field(default_factory=dict)


# The GroupLens archives are verified against the sha256 pinned here when set, otherwise against the
# .md5 GroupLens publishes next to each archive, and the sha256 seen on first download is recorded in
# the cache (`<archive>.sha256`) and enforced from then on.
DATASETS: dict[str, Source] = {
    "ml-100k": Source(GROUPLENS + "ml-100k.zip"),
    "ml-1m": Source(GROUPLENS + "ml-1m.zip"),
    "ml-10m": Source(GROUPLENS + "ml-10m.zip"),
    "ml-20m": Source(GROUPLENS + "ml-20m.zip"),
    "ml-25m": Source(GROUPLENS + "ml-25m.zip"),
    "ml-32m": Source(GROUPLENS + "ml-32m.zip"),
    "ml-latest-small": Source(GROUPLENS + "ml-latest-small.zip"),
}

# Offline mirror for ml-100k: the RecBole wheel on the package index ships the real data as atomic files.
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_DIR = "recbole/dataset_example/ml-100k/"
RECBOLE_FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}


def cache_dir() -> Path:
    root = os.environ.get("RECSYS_DATA_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recsys"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


MAX_EXTRACTED_BYTES = 16 << 30  # ML-32M unpacks to under 1 GiB
MAX_RATIO = 200  # CSV compresses ~5x; a zip bomb, thousands of times


def safe_extract(archive: Path, dest: Path, max_bytes: int = MAX_EXTRACTED_BYTES, max_ratio: float = MAX_RATIO) -> dict:
    """Extract a zip, refusing entries with absolute paths or '..' (zip-slip) and archives that expand
    past `max_bytes` or `max_ratio` x their size (counted while writing: headers can lie).

    Returns {relative path: sha256} of what was extracted, which is recorded beside it."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise RecsysError(f"{archive.name} is not a valid zip archive; re-download it") from None
    limit = min(max_bytes, int(max_ratio * max(archive.stat().st_size, 1 << 20)))
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for i in zf.infolist():
            p = Path(i.filename)
            if p.is_absolute() or i.filename.startswith(("/", "\\")) or ".." in p.parts:
                raise RecsysError(f"{archive.name} holds an unsafe entry {i.filename!r} (absolute or '..' path); "
                                  "refusing to extract it")
        if sum(i.file_size for i in infos) > limit:
            raise RecsysError(f"{archive.name} would expand to {sum(i.file_size for i in infos) >> 20:,} MiB, past the "
                              f"{limit >> 20:,} MiB limit for an archive of its size; refusing to extract it")
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            written, hashes = 0, {}
            for i in infos:
                target = tmp / i.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(i) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > limit:
                            raise RecsysError(f"{archive.name} expands past the {limit >> 20:,} MiB limit for an "
                                              "archive of its size; refusing to extract it")
                        h.update(chunk)
                        out.write(chunk)
                hashes[i.filename] = h.hexdigest()
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
            return hashes
        except zipfile.BadZipFile as e:
            raise RecsysError(f"{archive.name} is corrupt ({e}); re-download it") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


MANIFEST = ".complete"  # JSON {file: sha256} written after extraction; checked on every use


def verify_extracted(folder: Path) -> bool:
    import json

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or not manifest:
        return False
    return all((folder / f).is_file() and sha256_file(folder / f) == h for f, h in manifest.items())


def extract_verified(archive: Path, dest: Path) -> Path:
    import json

    hashes = safe_extract(archive, dest)
    (dest / MANIFEST).write_text(json.dumps(hashes, indent=1))
    return dest


def download(url: str, dest: Path, expected_sha256: str | None = None, expected_md5: str | None = None) -> None:
    """Fetch url to dest via a temporary file, renamed only after the checksum matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(tmp, "wb") as f:
            total, done = int(r.headers.get("Content-Length") or 0), 0
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if sys.stderr.isatty():  # progress bar on a terminal only
                    pct = f"{100 * done / total:5.1f}%" if total else f"{done >> 20} MiB"
                    print(f"\rdownloading {dest.name}: {pct}", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        got = sha256_file(tmp)
        if expected_sha256 and got != expected_sha256:
            raise RecsysError(f"{url} has sha256 {got[:12]}..., expected {expected_sha256[:12]}...; the download is corrupt")
        if expected_md5 and md5_file(tmp) != expected_md5:
            raise RecsysError(f"{url} does not match its published md5; the download is corrupt")
        tmp.rename(dest)
        dest.with_name(dest.name + ".sha256").write_text(got)
    finally:
        tmp.unlink(missing_ok=True)


def verify_archive(path: Path, source: Source) -> bool:
    """True when a cached archive matches its pinned (or first-seen) sha256."""
    expected = source.sha256
    recorded = path.with_name(path.name + ".sha256")
    if expected is None and recorded.exists():
        expected = recorded.read_text().strip()
    return expected is not None and sha256_file(path) == expected


def adopt_placed_archive(path: Path, source: Source) -> None:
    """An archive a user put in the cache by hand (as the offline error says): check it against GroupLens'
    published md5 where reachable; otherwise record its sha256 (enforced from then on) with a warning."""
    md5 = _published_md5(source.url)
    if md5 is not None and md5_file(path) != md5:
        raise RecsysError(f"{path} does not match GroupLens' published md5 for {source.url}; replace it with the "
                          "archive from that address")
    got = sha256_file(path)
    path.with_name(path.name + ".sha256").write_text(got)
    if md5 is None:
        print(f"warning: {path.name} could not be checked against GroupLens' checksum (unreachable); using it and "
              f"recording its sha256 {got[:12]}...", file=sys.stderr)


def _published_md5(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url + ".md5", timeout=20) as r:
            return r.read().decode().split()[0].strip().lower()
    except Exception:
        return None


def fetch_grouplens(name: str, root: Path) -> Path:
    """Return a folder holding the extracted archive, fetching and verifying it if needed."""
    source = DATASETS[name]
    archive = root / f"{name}.zip"
    extracted = root / name
    recorded = archive.with_name(archive.name + ".sha256")
    if archive.exists() and source.sha256 is None and not recorded.exists():
        adopt_placed_archive(archive, source)
    if archive.exists() and not verify_archive(archive, source):
        # never use a cached archive that does not match: drop it and its extraction, fetch again
        archive.unlink()
        archive.with_name(archive.name + ".sha256").unlink(missing_ok=True)
        shutil.rmtree(extracted, ignore_errors=True)
    if not archive.exists():
        md5 = None if source.sha256 else _published_md5(source.url)
        download(source.url, archive, source.sha256, md5)
    if not verify_extracted(extracted):  # missing, or changed since it was extracted: extract again
        extract_verified(archive, extracted)
    return extracted


def fetch_recbole_mirror(root: Path) -> Path:
    """ml-100k from the RecBole wheel on the package index, each file's sha256 pinned."""
    dest = root / "ml-100k-recbole"
    if (dest / ".complete").exists() and all(
        (dest / f).exists() and sha256_file(dest / f) == h for f, h in RECBOLE_FILES.items()
    ):
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".recbole.") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_WHEEL, "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise RecsysError(f"pip download {RECBOLE_WHEEL} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        staged = Path(tmp) / "ml-100k"
        staged.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            for fname, expected in RECBOLE_FILES.items():
                data = zf.read(RECBOLE_DIR + fname)
                if hashlib.sha256(data).hexdigest() != expected:
                    raise RecsysError(f"{fname} in {wheels[0].name} does not match its pinned sha256")
                (staged / fname).write_bytes(data)
        (staged / ".complete").write_text("ok")
        shutil.rmtree(dest, ignore_errors=True)
        staged.rename(dest)
    return dest


def resolve(dataset: str) -> tuple[Path, bool]:
    """Find the raw files for `dataset`: returns (folder or file, is_temporary_extraction)."""
    path = Path(dataset).expanduser()
    if dataset not in DATASETS and dataset != "synthetic":
        if path.exists():
            return path, False
        if os.sep in dataset or "." in Path(dataset).name:
            raise RecsysError(f"dataset path {dataset!r} does not exist; give an existing archive, folder or CSV")
        raise RecsysError(
            f"unknown dataset {dataset!r}; use one of {', '.join(list(DATASETS) + ['synthetic'])} or a local path"
        )
    root = cache_dir()
    tried = []
    if verify_extracted(root / dataset):
        return root / dataset, False
    if dataset == "ml-100k" and (root / "ml-100k-recbole" / ".complete").exists():
        try:
            return fetch_recbole_mirror(root), False
        except RecsysError as e:
            tried.append(f"cached mirror ({e})")
    try:
        return fetch_grouplens(dataset, root), False
    except Exception as e:
        tried.append(f"{DATASETS[dataset].url} ({type(e).__name__}: {str(e)[:80]})")
    if dataset == "ml-100k":
        try:
            return fetch_recbole_mirror(root), False
        except Exception as e:
            tried.append(f"pip mirror {RECBOLE_WHEEL} ({str(e)[:80]})")
    raise RecsysError(
        f"could not get {dataset}: tried {'; '.join(tried)}. Download {DATASETS[dataset].url} by hand and pass "
        f"dataset=<path to the zip>, or put it at {root / (dataset + '.zip')}"
    )
