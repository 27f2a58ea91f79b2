"""Every adapter on tiny files written here in its upstream format."""

import gzip
import typing
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from core.errors import ShopError
from core.params import SourceParams
from core.schema import validate_table
from pipelines.adapters import ADAPTERS, TASK_TABLES, load_source
from pipelines.adapters.judged import query_id

RETAIL = pd.DataFrame(
    {
        "InvoiceNo": ["536365", "536365", "C536379", "536380", "536381"],
        "StockCode": ["85123A", "71053", "85123A", "POST", "71053"],
        "Description": [
            "WHITE HANGING HEART",
            "WHITE METAL LANTERN",
            "WHITE HANGING HEART",
            "POSTAGE",
            "WHITE METAL LANTERN",
        ],
        "Quantity": [6, 6, -6, 1, 2],
        "InvoiceDate": pd.to_datetime(
            [
                "2010-12-01 08:26",
                "2010-12-01 08:26",
                "2010-12-01 09:41",
                "2011-06-01 10:00",
                "2011-06-02 10:00",
            ]
        ),
        "UnitPrice": [2.55, 3.39, 2.55, 18.0, 3.39],
        "CustomerID": [17850.0, 17850.0, 17850.0, 12583.0, None],
        "Country": ["United Kingdom", "United Kingdom", "United Kingdom", "France", "United Kingdom"],
    }
)


def write_retail(folder: Path, fmt: str) -> Path:
    """Write RETAIL as `fmt` (csv, csv.gz, parquet, xlsx, zip) the way upstream copies look."""
    path = folder / f"online_retail.{fmt}"
    if fmt in ("csv", "csv.gz"):
        RETAIL.to_csv(path, index=False)  # pandas gzips by suffix
    elif fmt == "parquet":
        RETAIL.to_parquet(path, index=False)
    elif fmt == "xlsx":
        RETAIL.to_excel(path, index=False)
    else:
        book = folder / "Online Retail.xlsx"
        RETAIL.to_excel(book, index=False)
        with zipfile.ZipFile(path, "w") as archive:
            archive.write(book, "Online Retail.xlsx")
    return path


def test_registry_covers_every_adapter_name_params_accepts():
    accepted = typing.get_args(SourceParams.model_fields["adapter"].annotation)
    assert set(ADAPTERS) == set(accepted)


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet", "xlsx", "zip"])
def test_online_retail_reads_every_upstream_format_alike(tmp_path, fmt):
    report: dict = {}
    tables = load_source("online_retail", write_retail(tmp_path, fmt), report=report)
    inter = validate_table(tables["interactions"], "interactions", "t")
    # the cancelled heart, its cancellation and the postage line are gone; the guest lantern stays
    assert sorted(zip(inter["basket_id"], inter["item_id"], strict=True)) == [
        ("536365", "71053"),
        ("536381", "71053"),
    ]
    inter = inter.sort_values("basket_id").reset_index(drop=True)
    assert inter["user_id"].isna().tolist() == [False, True]  # the guest row is kept, without a user
    assert inter.loc[0, "user_id"] == "17850"  # no ".0"
    assert inter.loc[0, "ts"] == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    assert report["cancellation_lines"] == 1 and report["cancelled_purchases"] == 1
    assert report["non_product_codes"] == 1
    assert tables["users"]["user_id"].tolist() == ["17850"]  # 12583 only bought postage


def test_online_retail_zip_without_the_workbook_is_refused(tmp_path):
    path = tmp_path / "online_retail.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(ShopError, match="no 'Online Retail.xlsx'"):
        load_source("online_retail", path)


def test_online_retail_refuses_a_mistyped_quantity(tmp_path):
    bad = RETAIL.astype({"Quantity": "object"})
    bad.loc[1, "Quantity"] = "six"
    bad.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ShopError, match=r"r.csv: column 'Quantity' must hold integers \(row 2 has 'six'\)"):
        load_source("online_retail", tmp_path / "r.csv")


def homedepot_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [2, 3, 9, 16],
            "product_uid": [100001, 100001, 100002, 100002],
            "product_title": ["Simpson Angle", "Simpson Angle", "Deck Over", "Deck Over"],
            "search_term": ["angle bracket", "l bracket", "Deck  over", "deck over"],
            "relevance": [3.0, 2.5, 1.0, 2.0],
        }
    )


def test_homedepot_normalises_relevance_and_merges_spellings_of_a_query(tmp_path):
    path = tmp_path / "train.csv.gz"
    homedepot_frame().to_csv(path, index=False)
    tables = load_source("homedepot", path)
    q = validate_table(tables["queries"], "queries", "t").set_index(["query", "item_id"])["relevance"]
    assert q[("angle bracket", "100001")] == 1.0
    assert q[("l bracket", "100001")] == 0.75
    assert len(q.loc["Deck over"]) == 1 and q[("Deck over", "100002")] == pytest.approx((0 + 0.5) / 2)
    assert set(tables["queries"]["query_id"]) == {
        query_id("angle bracket"),
        query_id("l bracket"),
        query_id("DECK over"),
    }
    assert sorted(tables["items"]["item_id"]) == ["100001", "100002"]
    assert tables["items"].set_index("item_id").loc["100002", "title"] == "Deck Over"


def test_homedepot_refuses_relevance_outside_one_to_three(tmp_path):
    df = homedepot_frame()
    df.loc[0, "relevance"] = 4.0
    df.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ShopError, match="relevance' must lie in 1..3"):
        load_source("homedepot", tmp_path / "train.csv")


def test_wands_maps_exact_partial_irrelevant_and_keeps_the_whole_catalogue(tmp_path):
    (tmp_path / "dataset").mkdir()
    pd.DataFrame(
        {
            "product_id": [0, 1, 2],
            "product_name": ["solid wood chair", "oak table", "lamp"],
            "product_class": ["Chairs", "Tables", "Lamps"],
            "category hierarchy": ["Furniture / Chairs", "Furniture / Tables", None],
            "product_description": ["a chair", None, "a lamp"],
        }
    ).to_csv(tmp_path / "dataset" / "product.csv", sep="\t", index=False)
    pd.DataFrame({"query_id": [0, 1], "query": ["wood chair", "table"], "query_class": ["Chairs", "Tables"]}).to_csv(
        tmp_path / "dataset" / "query.csv", sep="\t", index=False
    )
    pd.DataFrame(
        {
            "id": [0, 1, 2],
            "query_id": [0, 0, 1],
            "product_id": [0, 1, 1],
            "label": ["Exact", "Irrelevant", "Partial"],
        }
    ).to_csv(tmp_path / "dataset" / "label.csv", sep="\t", index=False)
    tables = load_source("wands", tmp_path)
    q = validate_table(tables["queries"], "queries", "t").set_index(["query", "item_id"])["relevance"]
    assert q.to_dict() == {("table", "1"): 0.5, ("wood chair", "0"): 1.0, ("wood chair", "1"): 0.0}
    items = validate_table(tables["items"], "items", "t").set_index("item_id")
    assert len(items) == 3  # the unjudged lamp stays in the catalogue
    assert items.loc["0", "category"] == "Furniture / Chairs" and items.loc["1", "description"] == ""
    assert (tables["queries"]["source"] == "wands").all()


def test_wands_refuses_an_unknown_label(tmp_path):
    pd.DataFrame({"product_id": [0], "product_name": ["chair"]}).to_csv(tmp_path / "product.csv", sep="\t", index=False)
    pd.DataFrame({"query_id": [0], "query": ["chair"]}).to_csv(tmp_path / "query.csv", sep="\t", index=False)
    pd.DataFrame({"id": [0], "query_id": [0], "product_id": [0], "label": ["Maybe"]}).to_csv(
        tmp_path / "label.csv", sep="\t", index=False
    )
    with pytest.raises(ShopError, match="label.csv: column 'label' must be Exact, Partial or Irrelevant"):
        load_source("wands", tmp_path)


def test_esci_uses_the_paper_gains(tmp_path):
    pd.DataFrame(
        {
            "example_id": [0, 1, 2, 3],
            "query": ["usb cable"] * 4,
            "query_id": [5] * 4,
            "product_id": ["B01", "B02", "B03", "B04"],
            "product_locale": ["us"] * 4,
            "esci_label": ["E", "S", "C", "I"],
            "small_version": [1] * 4,
            "large_version": [1] * 4,
            "split": ["train"] * 4,
        }
    ).to_parquet(tmp_path / "shopping_queries_dataset_examples.parquet")
    pd.DataFrame(
        {
            "product_id": ["B01", "B02", "B03", "B04", "B05"],
            "product_title": ["USB-C cable", "USB-A cable", "charger", "mug", "pen"],
            "product_description": [None, "braided", None, None, None],
            "product_bullet_point": ["1 m", None, None, None, None],
            "product_brand": ["Anker", None, None, None, None],
            "product_color": [None] * 5,
            "product_locale": ["us"] * 5,
        }
    ).to_parquet(tmp_path / "shopping_queries_dataset_products.parquet")
    tables = load_source("esci", tmp_path)
    q = validate_table(tables["queries"], "queries", "t").set_index("item_id")["relevance"]
    assert q.to_dict() == {"B01": 1.0, "B02": 0.1, "B03": 0.01, "B04": 0.0}
    items = validate_table(tables["items"], "items", "t").set_index("item_id")
    assert len(items) == 5
    assert items.loc["B01", "description"] == "1 m" and items.loc["B02", "description"] == "braided"


def test_canonical_folder_round_trips_and_derives_users(tmp_path):
    pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "title": ["Red mug", "Blue mug"],
            "description": ["", ""],
            "category": ["mugs", "mugs"],
            "price": [3.0, 4.0],
        }
    ).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame(
        {
            "user_id": ["u1", None],
            "item_id": ["a", "b"],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
            "event": ["purchase"] * 2,
            "quantity": [1, 2],
            "value": [3.0, 8.0],
            "basket_id": ["o1", "o2"],
        }
    ).to_parquet(tmp_path / "interactions.parquet")
    tables = load_source("canonical", tmp_path)
    assert set(tables) >= set(TASK_TABLES["retail"])
    assert tables["users"]["user_id"].tolist() == ["u1"]
    assert (tables["items"]["source"] == "canonical").all()
    assert tables["interactions"]["quantity"].tolist() == [1, 2]


def test_canonical_folder_without_items_is_refused(tmp_path):
    with pytest.raises(ShopError, match="no items.parquet"):
        load_source("canonical", tmp_path)


def test_canonical_table_missing_a_column_is_refused(tmp_path):
    pd.DataFrame(
        {"item_id": ["a"], "title": ["mug"], "description": [""], "category": [""], "price": [1.0]}
    ).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"query_id": ["q1"], "query": ["mug"], "item_id": ["a"]}).to_parquet(tmp_path / "queries.parquet")
    with pytest.raises(ShopError, match=r"missing column\(s\) \['relevance'\]"):
        load_source("canonical", tmp_path)


def test_gzip_that_is_not_gzip_is_refused(tmp_path):
    path = tmp_path / "train.csv.gz"
    path.write_text("id,product_uid\n1,2\n")
    with pytest.raises(ShopError, match="not a csv.gz file"):
        load_source("homedepot", path)
    path.write_bytes(gzip.compress(b"id,product_uid,product_title,search_term,relevance\n" * 200)[:40])
    with pytest.raises(ShopError, match="truncated or corrupt gzip"):
        load_source("homedepot", path)
