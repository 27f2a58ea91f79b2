"""A fresh machine: an empty data directory, the upstream files over HTTP, and `dvc repro` runs the whole loop.

The upstream files are rebuilt in code, in their upstream shapes, from small real slices of the shared data:
Online Retail as UCI's zip of `Online Retail.xlsx`, and Home Depot's judged pairs re-written as Wayfair WANDS'
tab-separated product / query / label files. A local HTTP server serves them under the same paths as the
urls in params.yaml, whose hosts alone are swapped for the server's.
"""

import functools
import http.server
import io
import json
import os
import subprocess
import threading
import zipfile

import openpyxl
import pandas as pd
import pytest
import yaml
from loop_fixture import copy_repository, homedepot_judgments, repro, retail_lines, scored_models, write_params

from core.paths import repo_root

UCI = "https://archive.ics.uci.edu"
GITHUB_RAW = "https://raw.githubusercontent.com"
ABLATION = ("search-minus_synthetic_queries", "search-aug_fgm")


def online_retail_zip(n_customers: int) -> bytes:
    """UCI's upstream shape: a zip holding `Online Retail.xlsx`, from `n_customers` real customers' lines."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Online Retail")
    rows = retail_lines(n_customers)
    sheet.append(list(rows.columns))
    for line in rows.itertuples(index=False):
        sheet.append(
            [
                line.InvoiceNo,
                line.StockCode,
                line.Description,
                int(line.Quantity),
                pd.Timestamp(line.InvoiceDate).to_pydatetime(),
                float(line.UnitPrice),
                float(line.CustomerID),  # upstream stores the ids as numbers
                line.Country,
            ]
        )
    workbook = io.BytesIO()
    book.save(workbook)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Online Retail.xlsx", workbook.getvalue())
    return archive.getvalue()


def wands_files(n_queries: int, n_products: int) -> dict[str, bytes]:
    """WANDS' upstream shape (tab-separated product / query / label) from real Home Depot judgments."""
    judged, titles = homedepot_judgments(n_queries, n_products)
    query_ids = {term: i for i, term in enumerate(sorted(judged["search_term"].unique()))}
    label = pd.cut(judged["relevance"], [0, 1.9, 2.6, 3.1], labels=["Irrelevant", "Partial", "Exact"])

    def tsv(frame: pd.DataFrame) -> bytes:
        return frame.to_csv(sep="\t", index=False).encode()

    return {
        "product.csv": tsv(pd.DataFrame({"product_id": titles.index, "product_name": titles.to_numpy()})),
        "query.csv": tsv(pd.DataFrame({"query_id": list(query_ids.values()), "query": list(query_ids)})),
        "label.csv": tsv(
            pd.DataFrame(
                {
                    "id": range(len(judged)),
                    "query_id": judged["search_term"].map(query_ids).to_numpy(),
                    "product_id": judged["product_uid"].to_numpy(),
                    "label": label.astype(str).to_numpy(),
                }
            )
        ),
    }


@pytest.fixture()
def upstream(tmp_path):
    """A real HTTP server serving the rebuilt upstream files under their params.yaml url paths; yields its url."""
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    www = tmp_path / "www"
    retail = www / params["data"]["retail"]["url"].removeprefix(UCI + "/")
    retail.parent.mkdir(parents=True)
    retail.write_bytes(online_retail_zip(n_customers=120))
    wands = params["data"]["search"]["fallback"]
    folder = www / wands["url"].removeprefix(GITHUB_RAW + "/")
    folder.mkdir(parents=True)
    for name, payload in wands_files(n_queries=250, n_products=1200).items():
        assert name in wands["files"]
        (folder / name).write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_make_repro_on_an_empty_data_directory_downloads_the_open_data_and_runs_the_whole_loop(tmp_path, upstream):
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    retail, search = params["data"]["retail"], params["data"]["search"]
    repo = copy_repository(tmp_path / "repo")
    write_params(
        repo,
        {
            "data": {
                "retail": {"url": retail["url"].replace(UCI, upstream)},
                "search": {"fallback": {"url": search["fallback"]["url"].replace(GITHUB_RAW, upstream)}},
            }
        },
        # two of the ablation models (a leave-one-out and the training switch) keep the experiment short
        ablation={name: params["experiments"]["ablation"][name] for name in ABLATION},
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    empty = tmp_path / "data"
    empty.mkdir()
    run = repro(repo, empty)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # the open data landed in the data directory and the search task ran on WANDS
    assert (empty / "online_retail" / "online+retail.zip").is_file()
    assert sorted(p.name for p in (empty / "wands").iterdir()) == ["label.csv", "product.csv", "query.csv"]
    ingest = json.loads((repo / "reports" / "ingest.json").read_text())
    assert ingest["search"]["adapter"] == "wands" and ingest["retail"]["adapter"] == "online_retail"
    # every default model was trained, scored on the real test split and packaged
    assert scored_models(repo) == set(params["experiments"]["models"])
    assert (repo / "reports" / "results.md").is_file() and (repo / "reports" / "promotion.json").is_file()
    assert any((repo / "bentoml_home" / "bentos").rglob("bento.yaml"))
    # the committed ablation results are another test split's: the table leaves them out
    assert "†" not in (repo / "reports" / "results.md").read_text()

    # `make ablation`: the ablation models in one dvc experiment (from a commit, as in a clone), then the report
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "loop"], cwd=repo, check=True, capture_output=True, env=os.environ | git)
    for command in (("training.ablation", "--name", "ablation-test"), ("dvc", "repro", "report")):
        run = repro(repo, empty, command=command)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    exported = json.loads((repo / "metrics" / "ablation.json").read_text())
    every = {**params["experiments"]["models"], **params["experiments"]["ablation"]}
    assert {f"{task}-{v}" for task in ("retail", "search") for v in exported[task]["models"]} == set(every)
    table = (repo / "reports" / "results.md").read_text()
    assert table.count(" † |") == len(params["experiments"]["ablation"]) and "`ablation-test`" in table
    assert "Stale" not in table and set(exported["search"]["ablation"]) == {
        v.removeprefix("minus_") for v in exported["search"]["models"] if v.startswith("minus_")
    }
