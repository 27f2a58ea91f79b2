"""Each Online Retail cleaning rule on a few hand-made transaction lines."""

import pandas as pd
import pytest

from pipelines import clean
from pipelines.adapters.formats import as_id


def lines(*rows: tuple) -> pd.DataFrame:
    """Raw lines: (invoice, code, description, quantity, "YYYY-MM-DD HH:MM", price, customer[, country])."""
    records = []
    for row in rows:
        invoice, code, desc, qty, when, price, customer, *country = row
        records.append(
            {
                "InvoiceNo": invoice,
                "StockCode": code,
                "Description": desc,
                "Quantity": qty,
                "InvoiceDate": pd.Timestamp(when),
                "UnitPrice": price,
                "CustomerID": customer,
                "Country": country[0] if country else "United Kingdom",
            }
        )
    df = pd.DataFrame.from_records(records)
    df["CustomerID"] = df["CustomerID"].astype("string")
    df["Description"] = df["Description"].astype("string")
    return df


def test_exact_duplicate_lines_are_dropped_once():
    df = lines(
        ("1", "22423", "CAKESTAND", 2, "2011-01-05 10:00", 12.75, "1"),
        ("1", "22423", "CAKESTAND", 2, "2011-01-05 10:00", 12.75, "1"),
        ("1", "22423", "CAKESTAND", 3, "2011-01-05 10:00", 12.75, "1"),
    )
    kept = clean.drop_exact_duplicates(df)
    assert len(kept) == 2
    assert sorted(kept["Quantity"]) == [2, 3]


def test_cancellation_drops_itself_and_the_latest_earlier_matching_purchase():
    df = lines(
        ("100", "22423", "A", 6, "2011-01-01 10:00", 1.0, "7"),  # older match
        ("101", "22423", "A", 6, "2011-01-02 10:00", 1.0, "7"),  # latest earlier match: cancelled
        ("102", "22423", "A", 4, "2011-01-02 11:00", 1.0, "7"),  # other quantity
        ("103", "22423", "A", 6, "2011-01-02 11:00", 1.0, "8"),  # other customer
        ("C104", "22423", "A", -6, "2011-01-03 09:00", 1.0, "7"),
        ("105", "22423", "A", 6, "2011-01-04 10:00", 1.0, "7"),
    )  # later than the cancellation
    kept, n_cancel, n_cancelled = clean.drop_cancellations(df)
    assert (n_cancel, n_cancelled) == (1, 1)
    assert sorted(kept["InvoiceNo"]) == ["100", "102", "103", "105"]


def test_each_purchase_is_cancelled_at_most_once():
    df = lines(
        ("100", "22423", "A", 6, "2011-01-01 10:00", 1.0, "7"),
        ("C101", "22423", "A", -6, "2011-01-02 10:00", 1.0, "7"),
        ("C102", "22423", "A", -6, "2011-01-03 10:00", 1.0, "7"),
    )
    kept, n_cancel, n_cancelled = clean.drop_cancellations(df)
    assert (n_cancel, n_cancelled, len(kept)) == (2, 1, 0)


def test_guest_cancellation_is_dropped_but_cancels_nothing():
    df = lines(
        ("100", "22423", "A", 6, "2011-01-01 10:00", 1.0, None),
        ("C101", "22423", "A", -6, "2011-01-02 10:00", 1.0, None),
    )
    kept, n_cancel, n_cancelled = clean.drop_cancellations(df)
    assert (n_cancel, n_cancelled) == (1, 0)
    assert kept["InvoiceNo"].tolist() == ["100"]


def test_non_positive_quantity_and_price_are_dropped():
    df = lines(
        ("1", "22423", "A", -3, "2011-01-01 10:00", 1.0, "7"),
        ("2", "22423", "A", 0, "2011-01-01 10:00", 1.0, "7"),
        ("3", "22423", "A", 2, "2011-01-01 10:00", 0.0, "7"),
        ("4", "22423", "A", 2, "2011-01-01 10:00", -11062.06, "7"),
        ("5", "22423", "A", 2, "2011-01-01 10:00", 1.0, "7"),
    )
    assert clean.drop_non_positive_quantity(df)["InvoiceNo"].tolist() == ["3", "4", "5"]
    assert clean.drop_non_positive_price(df)["InvoiceNo"].tolist() == ["1", "2", "5"]


@pytest.mark.parametrize(
    "code",
    [
        "POST",
        "DOT",
        "M",
        "D",
        "C2",
        "CRUK",
        "BANK CHARGES",
        "AMAZONFEE",
        "PADS",
        "B",
        "S",
        "gift_0001_10",
        "DCGS0003",
        "1234",
    ],
)
def test_non_product_codes_are_dropped(code):
    df = lines(
        ("1", code, "fee", 1, "2011-01-01 10:00", 5.0, "7"),
        ("1", "85123A", "HEART", 1, "2011-01-01 10:00", 2.55, "7"),
    )
    assert clean.drop_non_products(df)["StockCode"].tolist() == ["85123A"]


def test_item_title_is_the_most_frequent_description():
    df = lines(
        ("1", "22423", "REGENCY CAKESTAND", 1, "2011-01-01 10:00", 1.0, "7"),
        ("2", "22423", "REGENCY  CAKESTAND ", 1, "2011-01-02 10:00", 1.0, "7"),
        ("3", "22423", "cakestand damaged", 1, "2011-01-03 10:00", 1.0, "7"),
        ("4", "22424", None, 1, "2011-01-03 10:00", 1.0, "7"),
    )
    titles = clean.item_titles(df)
    assert titles["22423"] == "REGENCY CAKESTAND"
    assert titles["22424"] == ""


def test_uk_local_time_becomes_utc():
    local = pd.Series(pd.to_datetime(["2011-01-10 12:00", "2011-07-10 12:00"]))
    utc = clean.to_utc(local)
    assert str(utc.dt.tz) == "UTC"
    assert [t.hour for t in utc] == [12, 11]  # GMT in winter, BST (UTC+1) in summer


def test_customer_ids_lose_the_float_suffix():
    assert as_id(pd.Series([17850.0, None])).tolist() == ["17850", pd.NA]
    assert as_id(pd.Series(["17850.0", " 12 ", ""])).tolist() == ["17850", "12", pd.NA]


def test_clean_reports_each_rule_and_keeps_guests_as_item_evidence_only():
    df = lines(
        ("1", "22423", "CAKESTAND", 2, "2011-01-05 10:00", 12.75, "7", "France"),
        ("1", "22423", "CAKESTAND", 2, "2011-01-05 10:00", 12.75, "7", "France"),  # duplicate
        ("1", "22423", "CAKESTAND", 1, "2011-01-05 10:00", 12.75, "7", "France"),  # same basket, merged
        ("2", "POST", "POSTAGE", 1, "2011-01-05 10:00", 18.0, "7", "France"),  # non-product
        ("3", "85123A", "HEART", 4, "2011-06-05 10:00", 2.5, None),  # guest
        ("4", "85123A", "HEART", 5, "2011-06-06 10:00", 0.0, "8"),  # zero price
        ("5", "85123A", "HEART", -5, "2011-06-06 10:00", 2.5, "8"),
    )  # negative quantity
    rows, report = clean.clean_online_retail(df)
    assert report == {
        "rows_in": 7,
        "exact_duplicates": 1,
        "cancellation_lines": 0,
        "cancelled_purchases": 0,
        "non_positive_quantity": 1,
        "non_positive_price": 1,
        "non_product_codes": 1,
        "rows_out": 3,
        "guest_rows_kept": 1,
    }
    tables = clean.to_canonical(rows)
    inter = tables["interactions"]
    assert len(inter) == 2  # the two CAKESTAND lines of invoice 1 are one (basket, item) row
    cake = inter[inter["item_id"] == "22423"].iloc[0]
    assert (cake["quantity"], cake["value"], cake["user_id"], cake["basket_id"]) == (3, 3 * 12.75, "7", "1")
    assert inter.loc[inter["item_id"] == "85123A", "user_id"].isna().all()
    assert tables["users"]["user_id"].tolist() == ["7"]
    assert tables["users"]["country"].tolist() == ["France"]
    assert sorted(tables["items"]["item_id"]) == ["22423", "85123A"]
    assert (tables["interactions"]["event"] == "purchase").all()
