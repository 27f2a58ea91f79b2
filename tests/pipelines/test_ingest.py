"""The ingest command: good input gives canonical tables; each bad input one error line, no output."""

import gzip
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from core.io import read_table
from core.paths import repo_root
from pipelines.ingest import slice_retail, slice_search

RETAIL_CSV = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom\n"
    "536366,71053,WHITE METAL LANTERN,2,2011-07-01 09:00:00,3.39,,United Kingdom\n"
    "536367,22423,REGENCY CAKESTAND,1,2011-07-02 10:00:00,12.75,12583,France\n"
)
SEARCH_CSV = (
    "id,product_uid,product_title,search_term,relevance\n"
    "2,100001,Simpson Strong-Tie 12-Gauge Angle,angle bracket,3\n"
    "3,100001,Simpson Strong-Tie 12-Gauge Angle,l bracket,2.5\n"
    "9,100002,BEHR Premium Textured DeckOver,deck over,3\n"
)


def make_project(
    tmp_path: Path,
    retail_name: str = "online_retail.csv",
    retail: bytes | None = None,
    search_name: str = "train.csv",
    search: bytes | None = None,
) -> Path:
    """A tmp folder with params.yaml and raw/{retail,search}/<file>, as `fetch` would leave it."""
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    # every key is required: no checksum, no download, no fallback
    unset = {"sha256": None, "url": None, "url_sha256": None, "files": None, "fallback": None}
    params["data"]["retail"] = {"adapter": "online_retail", "file": retail_name, **unset}
    params["data"]["search"] = {"adapter": "homedepot", "file": search_name, **unset}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for task, name, data in (
        ("retail", retail_name, retail if retail is not None else RETAIL_CSV.encode()),
        ("search", search_name, search if search is not None else SEARCH_CSV.encode()),
    ):
        (tmp_path / "raw" / task).mkdir(parents=True)
        (tmp_path / "raw" / task / name).write_bytes(data)
    return tmp_path


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def start_ingest(project: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.ingest",
            "--params",
            str(project / "params.yaml"),
            "--raw",
            str(project / "raw"),
            "--out",
            str(project / "canonical"),
            "--report",
            str(project / "ingest.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=project,
        env=env,
    )


def finish(process: subprocess.Popen) -> tuple[int, list[str]]:
    """Return (exit code, stderr lines that are not progress logs)."""
    _, stderr = process.communicate(timeout=180)
    return process.returncode, [line for line in stderr.strip().splitlines() if not LOG_LINE.match(line)]


def run_ingest(project: Path) -> tuple[int, list[str]]:
    return finish(start_ingest(project))


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ingest_writes_canonical_tables_and_the_cleaning_report(tmp_path):
    project = make_project(tmp_path)
    code, errors = run_ingest(project)
    assert code == 0, errors
    inter = read_table(project / "canonical" / "retail" / "interactions.parquet", "interactions")
    assert len(inter) == 4 and inter["user_id"].isna().sum() == 1
    assert set(read_table(project / "canonical" / "retail" / "users.parquet", "users")["user_id"]) == {
        "17850",
        "12583",
    }
    queries = read_table(project / "canonical" / "search" / "queries.parquet", "queries")
    assert sorted(queries["relevance"]) == [0.75, 1.0, 1.0]
    report = json.loads((project / "ingest.json").read_text())
    assert report["retail"]["cleaning"]["rows_in"] == 4 and report["retail"]["cleaning"]["guest_rows_kept"] == 1
    assert report["search"]["output"]["distinct_queries"] == 3


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def _zip_without_workbook() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Online Retail.csv", RETAIL_CSV)
    return buffer.getvalue()


def _parquet_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "x.parquet"
    pd.read_csv(io.StringIO(RETAIL_CSV)).to_parquet(path)
    return path.read_bytes()


BAD_INPUTS = {
    "missing column": (
        "online_retail.csv",
        lambda t: RETAIL_CSV.replace(",Quantity", ",Qty").encode(),
        "missing column(s) ['Quantity']",
    ),
    "wrong type": (
        "online_retail.csv",
        lambda t: RETAIL_CSV.replace(",6,2010-12-01", ",six,2010-12-01").encode(),
        "column 'Quantity' must hold integers",
    ),
    "bad date": (
        "online_retail.csv",
        lambda t: RETAIL_CSV.replace("2011-07-01 09:00:00", "someday").encode(),
        "column 'InvoiceDate' must hold dates",
    ),
    "empty file": ("online_retail.csv.gz", lambda t: b"", "file is empty"),
    "empty gzip": ("online_retail.csv.gz", lambda t: _gz(""), "file is empty"),
    "truncated gzip": (
        "online_retail.csv.gz",
        lambda t: _gz(RETAIL_CSV * 50)[:-30],
        "truncated or corrupt gzip",
    ),
    "parquet named csv": (
        "online_retail.csv",
        _parquet_bytes,
        "not a csv file (its bytes look like Parquet)",
    ),
    "zip without workbook": (
        "online_retail.zip",
        lambda t: _zip_without_workbook(),
        "zip holds no 'Online Retail.xlsx'",
    ),
    "csv named parquet": ("online_retail.parquet", lambda t: RETAIL_CSV.encode(), "not a parquet file"),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict:
    """Run ingest on every bad input at once (each a separate process) and collect the outcomes."""
    started = {}
    for case, (name, make, _) in BAD_INPUTS.items():
        folder = tmp_path_factory.mktemp(case.replace(" ", "_"))
        project = make_project(folder, retail_name=name, retail=make(folder))
        started[case] = (project, start_ingest(project))
    return {case: (project, *finish(process)) for case, (project, process) in started.items()}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_retail_input_gives_one_error_line_and_no_output(bad_runs, case):
    name, _, expected = BAD_INPUTS[case]
    project, code, errors = bad_runs[case]
    assert code == 2
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: ") and name in errors[0] and expected in errors[0], errors[0]
    assert not (project / "canonical").exists()
    assert not (project / "ingest.json").exists()


def test_bad_search_input_leaves_previous_outputs_untouched(tmp_path):
    project = make_project(tmp_path, search=SEARCH_CSV.replace("product_title", "title").encode())
    previous = project / "canonical" / "retail"
    previous.mkdir(parents=True)
    (previous / "items.parquet").write_bytes(b"previous run")
    before = snapshot(project / "canonical")
    code, errors = run_ingest(project)
    assert code == 2
    assert errors == [
        f"error: {project / 'raw' / 'search' / 'train.csv'}: missing column(s) ['product_title'] "
        "(found ['id', 'product_uid', 'title', 'search_term', 'relevance'])"
    ]
    assert snapshot(project / "canonical") == before
    assert [p.name for p in (project / "canonical").iterdir()] == ["retail"]  # no temp folders left


def retail_tables(n_users: int = 50) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    users = [f"u{i}" if i % 5 else None for i in range(n_users)]
    inter = pd.DataFrame(
        {
            "user_id": pd.array(users, dtype="string"),
            "item_id": [f"i{k}" for k in rng.integers(0, 30, n_users)],
            "basket_id": [f"b{i}" for i in range(n_users)],
        }
    )
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(30)]})
    return {
        "interactions": inter,
        "items": items,
        "users": pd.DataFrame({"user_id": [u for u in users if u]}),
    }


def test_slice_retail_is_deterministic_for_a_seed_and_keeps_guest_share():
    tables = retail_tables()
    a, b, c = (slice_retail(tables, 10, s) for s in (1, 1, 2))
    assert a["interactions"].equals(b["interactions"])
    assert not a["interactions"].equals(c["interactions"])
    assert a["interactions"]["user_id"].nunique() == 10 and len(a["users"]) == 10
    assert a["interactions"]["user_id"].isna().sum() == round(10 * 10 / 40)  # guests in the same share
    assert set(a["items"]["item_id"]) == set(a["interactions"]["item_id"])
    assert slice_retail(tables, None, 1) is tables


def test_slice_search_keeps_whole_queries():
    queries = pd.DataFrame({"query_id": [f"q{i // 3}" for i in range(60)], "item_id": [f"i{i}" for i in range(60)]})
    tables = {"queries": queries, "items": pd.DataFrame({"item_id": [f"i{i}" for i in range(70)]})}
    sliced = slice_search(tables, 5, seed=3)
    assert sliced["queries"]["query_id"].nunique() == 5 and len(sliced["queries"]) == 15
    assert sliced["queries"].equals(slice_search(tables, 5, seed=3)["queries"])
    assert set(sliced["items"]["item_id"]) == set(sliced["queries"]["item_id"])


@pytest.mark.integration
def test_fetch_ingest_split_on_the_real_data_slice(tmp_path):
    """fetch -> ingest -> split on $SHOP_DATA_DIR with 300 customers and 500 queries, into tmp_path."""
    if not (Path(os.environ.get("SHOP_DATA_DIR", "/nonexistent")) / "online_retail").is_dir():
        pytest.skip("SHOP_DATA_DIR does not hold the real data")
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["data"].update(max_users=300, max_queries=500)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for command, args in (
        ("fetch", ["--out", "raw"]),
        ("ingest", ["--raw", "raw", "--out", "canonical", "--report", "ingest.json"]),
        ("split", ["--canonical", "canonical", "--out", "splits", "--report", "split.json"]),
    ):
        result = subprocess.run(
            [sys.executable, "-m", f"pipelines.{command}", "--params", "params.yaml", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "ingest.json").read_text())
    assert report["retail"]["cleaning"]["rows_in"] == 499_584  # cleaning sees the whole file, slicing follows
    assert report["retail"]["cleaning"]["rows_out"] < 499_584
    canonical = tmp_path / "canonical"
    users = read_table(canonical / "retail" / "users.parquet", "users")
    inter = read_table(canonical / "retail" / "interactions.parquet", "interactions")
    items = read_table(canonical / "retail" / "items.parquet", "items")
    assert len(users) == 300 and set(inter["user_id"].dropna()) == set(users["user_id"])
    assert inter["item_id"].isin(items["item_id"]).all() and items["item_id"].str.match(r"^\d{5}").all()
    assert not inter["user_id"].dropna().str.endswith(".0").any()
    queries = read_table(canonical / "search" / "queries.parquet", "queries")
    assert queries["query_id"].nunique() == 500 and queries["relevance"].between(0, 1).all()
    read_table(canonical / "search" / "items.parquet", "items")
    splits = tmp_path / "splits"
    cutoff = pd.Timestamp(params["split"]["retail"]["cutoff"], tz="UTC")
    train = read_table(splits / "retail" / "train.parquet", "interactions")
    test = read_table(splits / "retail" / "test.parquet", "interactions")
    assert (train["ts"] < cutoff).all() and (test["ts"] >= cutoff).all()
    assert set(test["user_id"]) <= set(train["user_id"].dropna()) and len(test) > 0
    search = {name: read_table(splits / "search" / f"{name}.parquet", "queries") for name in ("train", "valid", "test")}
    assert not set(search["train"]["query"]) & set(search["test"]["query"])
    assert sum(df["query_id"].nunique() for df in search.values()) == 500
