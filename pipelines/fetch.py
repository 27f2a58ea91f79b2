"""Stage `fetch`: copy each raw dataset from the data directory into data/raw/<task>/, checksum-verified.

A file absent from the data directory is downloaded from its `url` (progress bar, retries, checksum) first;
a source with neither hands over to its `fallback` (the open default: Wayfair WANDS for search, downloaded
file by file). Without any of these, or without a network, the command stops with one line saying which
file to put where.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

import httpx
import typer
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from core import cli
from core.errors import ShopError
from core.io import atomic_dir, atomic_path
from core.params import SourceParams
from core.paths import DATA_DIR_ENV, data_dir
from core.tasks import TASKS, tasks_on, write_task_off

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)

OPEN_SEARCH_DATA = (
    "or set data.search.adapter to an openly licensed dataset: wands "
    "(https://github.com/wayfair/WANDS) or esci (https://github.com/amazon-science/esci-data)"
)
SOURCE_MANIFEST = ".source.json"  # in data/raw/<task>/: the adapter of the source fetch used
SUFFIXES = (".csv.gz", ".tsv.gz", ".csv", ".tsv", ".parquet", ".zip", ".xlsx")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, or of a folder (over its files' relative paths and contents, sorted)."""
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path).as_posix()}\0{sha256_of(child)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str | None, key: str) -> str:
    """Return the file's sha256; raise ShopError when `expected` is set and differs."""
    actual = sha256_of(path)
    if expected and actual != expected.lower():
        raise ShopError(
            f"{path}: sha256 is {actual}, but {key} expects {expected} "
            "(replace the file, or update the hash if the new version is intended)"
        )
    return actual


def _suffix(name: str) -> str:
    return next((s for s in SUFFIXES if name.lower().endswith(s)), Path(name).suffix.lower())


def download_target(source: SourceParams, root: Path) -> Path:
    """Where a download lands: the configured file, or beside it under the url's name if formats differ."""
    wanted = root / source.file
    if source.files:
        return wanted
    url_name = unquote(Path(urlparse(source.url or "").path).name)
    if url_name and _suffix(url_name) != _suffix(wanted.name):
        return wanted.parent / url_name
    return wanted


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, httpx.TransportError)


@retry(
    retry=retry_if_exception(_retryable),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=8),
    reraise=True,
)
def _stream(url: str, target: Path) -> None:
    with (
        atomic_path(target) as tmp,
        httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response,
    ):
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        with open(tmp, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            for chunk in response.iter_bytes(1 << 16):
                fh.write(chunk)
                bar.update(len(chunk))


def download(source: SourceParams, target: Path, key: str) -> Path:
    """Download a source to `target` (atomically, retried); check `url_sha256` or log the hash; return target.

    With `files`, `target` is a folder receiving `url + name` for each name, and the hash is the folder's.
    """
    url = source.url
    try:
        if source.files:
            with atomic_dir(target) as tmp:
                for name in source.files:
                    url = f"{source.url.rstrip('/')}/{name}"
                    log.info("downloading %s -> %s", url, target / name)
                    _stream(url, tmp / name)
        else:
            log.info("downloading %s -> %s", url, target)
            _stream(url, target)
    except (httpx.HTTPError, OSError) as exc:
        where = target / unquote(Path(urlparse(url).path).name) if source.files else target
        raise ShopError(
            f"cannot download {url} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"download it by hand and put it at {where}"
        ) from None
    try:
        digest = verify(target, source.url_sha256, f"{key}.url_sha256")
    except ShopError:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        raise
    if not source.url_sha256:
        log.info("downloaded %s sha256 %s (set %s.url_sha256 to pin it)", target.name, digest, key)
    return target


def locate(source: SourceParams, key: str, root: Path) -> tuple[SourceParams, str, Path]:
    """The source in use, its params key and its raw file (or folder) in the data directory, downloaded if allowed.

    A source whose file is absent and has no url hands over to its `fallback` (the open dataset), if any.
    """
    wanted = root / source.file
    if wanted.exists():
        return source, key, wanted
    if source.url:
        target = download_target(source, root)
        return source, key, target if target.exists() else download(source, target, key)
    if source.fallback:
        log.warning(
            "%s not found and %s.url is not set: using %s.fallback (%s, %s)",
            wanted,
            key,
            key,
            source.fallback.adapter,
            source.fallback.url or source.fallback.file,
        )
        return locate(source.fallback, f"{key}.fallback", root)
    hint = f"{key}.file: put it at {wanted} (the data directory is ${DATA_DIR_ENV}, now {root})"
    if source.adapter == "homedepot":
        raise ShopError(
            f"{wanted} not found and never downloaded (Home Depot is Kaggle competition data): get "
            f"train.csv from the 'Home Depot Product Search Relevance' competition and {hint}, "
            f"{OPEN_SEARCH_DATA}"
        )
    raise ShopError(f"{wanted} not found and {key}.url is not set; {hint}")


def check_source(source: SourceParams, task: str, root: Path) -> tuple[SourceParams, Path, str]:
    """Locate (or download) one task's source and verify its checksum; return (source used, path, sha256)."""
    used, key, path = locate(source, f"data.{task}", root)
    configured = path == root / used.file
    expected = used.sha256 if configured else used.url_sha256
    return used, path, verify(path, expected, f"{key}.{'sha256' if configured else 'url_sha256'}")


def copy_source(path: Path, out: Path, adapter: str) -> int:
    """Copy a raw file (or folder) into `out`, replacing the folder whole; return the bytes copied.

    The `adapter` that reads it is recorded beside it (`SOURCE_MANIFEST`): ingest reads a fallback with its own.
    """
    with atomic_dir(out) as tmp:
        if path.is_dir():
            shutil.copytree(path, tmp / path.name)
        else:
            shutil.copyfile(path, tmp / path.name)
        (tmp / SOURCE_MANIFEST).write_text(json.dumps({"adapter": adapter, "name": path.name}) + "\n")
    copied = out / path.name
    return sum(p.stat().st_size for p in copied.rglob("*") if p.is_file()) if copied.is_dir() else copied.stat().st_size


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    out: Annotated[Path, typer.Option(help="folder receiving retail/ and search/")] = Path("data/raw"),
    task: Annotated[list[str] | None, typer.Option(help="fetch only this task (retail, search); repeatable")] = None,
) -> None:
    """Copy (or download) the raw retail and search files into data/raw/{retail,search}/."""
    config = cli.load(params)
    out = cli.resolve(out)
    root = data_dir()
    tasks, on = task or list(TASKS), tasks_on(config.data)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ShopError(f"--task: unknown task(s) {unknown}; expected one of {', '.join(TASKS)}")
    # Locate and verify everything first, so a missing or altered file leaves data/raw as it was.
    found = {name: check_source(getattr(config.data, name), name, root) for name in tasks if name in on}
    for name in tasks:
        if name not in on:
            write_task_off(out / name, name)
    for name, (used, path, digest) in found.items():
        size = copy_source(path, out / name, used.adapter)
        log.info("fetched %s -> %s (%d bytes, sha256 %s)", path, out / name / path.name, size, digest)


if __name__ == "__main__":
    cli.run(app)
