"""Online Retail (csv, csv.gz, parquet, xlsx or the upstream zip of `Online Retail.xlsx`) -> canonical."""

import zipfile
from pathlib import Path

import pandas as pd

from core.errors import ShopError
from pipelines.adapters.formats import (
    as_datetime,
    as_float,
    as_id,
    as_int,
    file_kind,
    read_excel,
    read_raw,
    require_columns,
    sniff,
)
from pipelines.clean import RAW_COLUMNS, clean_online_retail, to_canonical

WORKBOOK = "Online Retail.xlsx"


def read_online_retail_raw(path: Path) -> pd.DataFrame:
    """Return the raw transaction lines with typed columns; refuse a missing column or a mistyped cell."""
    path = Path(path)
    df = _read_zip(path) if file_kind(path) == "zip" else read_raw(path)
    require_columns(df, RAW_COLUMNS, path)
    text = {c: df[c].astype("string").str.strip() for c in ("InvoiceNo", "StockCode", "Country")}
    if text["StockCode"].isna().any():
        raise ShopError(f"{path}: column 'StockCode' has {int(text['StockCode'].isna().sum())} empty values")
    return pd.DataFrame(
        {
            "InvoiceNo": as_id(df["InvoiceNo"]).fillna(""),
            "StockCode": text["StockCode"].str.upper(),
            "Description": df["Description"].astype("string"),
            "Quantity": as_int(df["Quantity"], path),
            "InvoiceDate": as_datetime(df["InvoiceDate"], path),
            "UnitPrice": as_float(df["UnitPrice"], path),
            "CustomerID": as_id(df["CustomerID"]),
            "Country": text["Country"].fillna(""),
        }
    )


def _read_zip(path: Path) -> pd.DataFrame:
    if sniff(path) != "zip/xlsx":
        raise ShopError(f"{path}: not a zip file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            workbook = next((n for n in names if Path(n).name.lower() == WORKBOOK.lower()), None)
            if workbook is None:
                raise ShopError(f"{path}: zip holds no '{WORKBOOK}' (found {names[:5]})")
            data = archive.read(workbook)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ShopError(f"{path}: truncated or corrupt zip file ({exc})") from None
    return read_excel(path / workbook, data)


def read_online_retail(path: Path, report: dict | None = None) -> dict[str, pd.DataFrame]:
    """Canonical items/users/interactions from Online Retail; rows each cleaning rule drops go to `report`."""
    raw = read_online_retail_raw(path)
    clean, counts = clean_online_retail(raw)
    tables = to_canonical(clean)
    counts["lines_merged_into_basket_items"] = len(clean) - len(tables["interactions"])
    if report is not None:
        report.update(counts)
    return tables
