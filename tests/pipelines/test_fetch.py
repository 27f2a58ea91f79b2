"""Fetching raw files: checked copies, downloads from a real local HTTP server, one-line failures."""

import functools
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from core.errors import ShopError
from core.params import SourceParams
from core.paths import repo_root
from core.tasks import OFF_MARKER
from pipelines.fetch import check_source, copy_source, download_target, locate, sha256_of
from pipelines.ingest import raw_adapter, raw_input

PAYLOAD = b"InvoiceNo,StockCode\n536365,85123A\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields its base url."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "retail.csv").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def source(**kwargs) -> SourceParams:
    return SourceParams(
        **{
            "adapter": "online_retail",
            "file": "retail/retail.csv",
            "sha256": None,
            "url": None,
            "url_sha256": None,
            "files": None,
            "fallback": None,
            **kwargs,
        }
    )


def test_present_file_is_verified_and_copied(tmp_path):
    (tmp_path / "data" / "retail").mkdir(parents=True)
    (tmp_path / "data" / "retail" / "retail.csv").write_bytes(PAYLOAD)
    used, path, digest = check_source(source(sha256=PAYLOAD_SHA), "retail", tmp_path / "data")
    assert digest == PAYLOAD_SHA
    assert copy_source(path, tmp_path / "raw" / "retail", used.adapter) == len(PAYLOAD)
    assert (tmp_path / "raw" / "retail" / "retail.csv").read_bytes() == PAYLOAD


def test_checksum_mismatch_names_the_param(tmp_path):
    (tmp_path / "retail").mkdir()
    (tmp_path / "retail" / "retail.csv").write_bytes(PAYLOAD + b"tampered\n")
    with pytest.raises(ShopError, match=r"retail\.csv: sha256 is [0-9a-f]{64}, but data\.retail\.sha256 expects"):
        check_source(source(sha256=PAYLOAD_SHA), "retail", tmp_path)


def test_absent_file_is_downloaded_and_checked(tmp_path, server):
    data = tmp_path / "data"
    _, path, digest = check_source(source(url=f"{server}/retail.csv", url_sha256=PAYLOAD_SHA), "retail", data)
    assert path == data / "retail" / "retail.csv" and path.read_bytes() == PAYLOAD and digest == PAYLOAD_SHA
    # a second call finds the downloaded file and does not need the server
    assert locate(source(url="http://127.0.0.1:9/retail.csv"), "data.retail", data)[2] == path


def test_download_with_the_wrong_hash_is_removed(tmp_path, server):
    with pytest.raises(ShopError, match="url_sha256 expects"):
        check_source(source(url=f"{server}/retail.csv", url_sha256="0" * 64), "retail", tmp_path)
    assert not (tmp_path / "retail" / "retail.csv").exists()


def test_failed_download_says_where_to_put_the_file(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ShopError, match=r"cannot download .*; download it by hand and put it at .*retail\.csv"):
        locate(source(url=f"http://127.0.0.1:{port}/retail.csv"), "data.retail", tmp_path)
    assert not list(tmp_path.rglob("*.csv*"))  # no partial download left


def test_a_download_in_another_format_keeps_the_upstream_name(tmp_path):
    zipped = source(
        file="online_retail/online_retail.csv.gz",
        url="https://archive.ics.uci.edu/static/public/352/online+retail.zip",
    )
    assert download_target(zipped, tmp_path) == tmp_path / "online_retail" / "online+retail.zip"
    assert download_target(source(url="https://x.org/retail.csv"), tmp_path) == tmp_path / "retail" / "retail.csv"


def test_a_folder_source_is_copied_whole_with_a_stable_hash(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "items.parquet").write_bytes(b"1")
    (folder / "queries.parquet").write_bytes(b"2")
    digest = sha256_of(folder)
    _, path, found = check_source(source(adapter="canonical", file="shop", sha256=digest), "search", tmp_path)
    assert found == digest
    copy_source(path, tmp_path / "raw" / "search", "canonical")
    assert sorted(p.name for p in (tmp_path / "raw" / "search" / "shop").iterdir()) == [
        "items.parquet",
        "queries.parquet",
    ]
    (folder / "queries.parquet").write_bytes(b"3")
    assert sha256_of(folder) != digest


def run_fetch(tmp_path, data, retail, search) -> subprocess.CompletedProcess:
    """`python -m pipelines.fetch` with params.yaml's data.retail / data.search replaced."""
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["data"]["retail"], params["data"]["search"] = retail, search
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.fetch",
            "--params",
            str(tmp_path / "params.yaml"),
            "--out",
            str(tmp_path / "raw"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SHOP_DATA_DIR": str(data)},
    )


def test_missing_home_depot_file_is_one_line_pointing_to_open_alternatives(tmp_path):
    data = tmp_path / "data"
    (data / "retail").mkdir(parents=True)
    (data / "retail" / "retail.csv").write_bytes(PAYLOAD)
    unset = {
        "sha256": None,
        "url": None,
        "url_sha256": None,
        "files": None,
        "fallback": None,
    }  # every key is required: no checksum, no download
    retail = {"adapter": "online_retail", "file": "retail/retail.csv", **unset}
    result = run_fetch(tmp_path, data, retail, {"adapter": "homedepot", "file": "homedepot/train.csv", **unset})
    assert result.returncode == 2
    errors = [
        line
        for line in result.stderr.strip().splitlines()
        if not re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING) ", line)
    ]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {data / 'homedepot' / 'train.csv'} not found")
    assert "wands" in errors[0] and "esci" in errors[0] and "never downloaded" in errors[0]
    assert not (tmp_path / "raw").exists()  # the retail file was not copied either


def test_a_task_without_a_dataset_is_off_and_both_off_is_one_line(tmp_path):
    data = tmp_path / "data"
    (data / "retail").mkdir(parents=True)
    (data / "retail" / "retail.csv").write_bytes(PAYLOAD)
    retail = source(sha256=PAYLOAD_SHA).model_dump()
    result = run_fetch(tmp_path, data, retail, None)  # a recommendation-only shop: no search file anywhere
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "raw" / "retail" / "retail.csv").read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "raw" / "search").iterdir()] == [OFF_MARKER]
    both_off = run_fetch(tmp_path, data, None, None)
    assert both_off.returncode == 2
    assert both_off.stderr.strip().splitlines() == [
        "error: params.yaml: data: Value error, both retail and search are null: at least one task needs a "
        "dataset (1 problem(s))"
    ]


WANDS_FILES = {
    "product.csv": b"product_id\tproduct_name\n1\tsalon chair\n",
    "query.csv": b"query_id\tquery\n0\tchair\n",
    "label.csv": b"id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tExact\n",
}


def test_an_absent_file_without_url_falls_back_to_the_open_folder_download(tmp_path, server):
    www = tmp_path / "www" / "WANDS" / "dataset"
    www.mkdir(parents=True)
    for name, payload in WANDS_FILES.items():
        (www / name).write_bytes(payload)
    wands = source(adapter="wands", file="wands", url=f"{server}/WANDS/dataset", files=list(WANDS_FILES))
    homedepot = source(adapter="homedepot", file="homedepot/train.csv", fallback=wands)
    data = tmp_path / "data"
    used, path, digest = check_source(homedepot, "search", data)
    assert used.adapter == "wands" and path == data / "wands"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == WANDS_FILES and digest == sha256_of(path)
    copy_source(path, tmp_path / "raw" / "search", used.adapter)
    assert raw_adapter(tmp_path / "raw" / "search", "homedepot") == "wands"
    assert raw_input(tmp_path / "raw" / "search", "search") == tmp_path / "raw" / "search" / "wands"
    # the pinned folder hash is checked like a file's; a present Home Depot file wins over the fallback
    with pytest.raises(ShopError, match=r"data\.search\.fallback\.sha256 expects"):
        check_source(
            source(adapter="homedepot", file="x.csv", fallback=wands.model_copy(update={"sha256": "0" * 64})),
            "search",
            data,
        )
    (data / "homedepot").mkdir()
    (data / "homedepot" / "train.csv").write_bytes(PAYLOAD)
    assert check_source(homedepot, "search", data)[0].adapter == "homedepot"


def test_a_folder_download_that_fails_midway_leaves_no_partial_folder(tmp_path, server):
    (tmp_path / "www" / "product.csv").write_bytes(WANDS_FILES["product.csv"])  # query.csv is missing upstream
    wands = source(adapter="wands", file="wands", url=server, files=list(WANDS_FILES))
    with pytest.raises(ShopError, match=r"cannot download .*/query\.csv .*put it at .*wands/query\.csv"):
        check_source(source(adapter="homedepot", file="hd.csv", fallback=wands), "search", tmp_path / "data")
    assert not (tmp_path / "data" / "wands").exists()
