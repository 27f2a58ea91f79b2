"""Reading raw tabular files safely: sniff the real format, refuse empty/truncated files, type columns.

Every failure is a ShopError naming the file and the problem, so a bad input gives one clear line.
"""

import gzip
import io
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pyarrow

from core.errors import ShopError

MAGIC = {b"PAR1": "Parquet", b"PK\x03\x04": "zip/xlsx", b"\x1f\x8b": "gzip"}


def sniff(path: Path) -> str | None:
    """Return the binary format a file's first bytes announce ("Parquet", "zip/xlsx", "gzip"), else None."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise ShopError(f"{path}: file is empty")
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)


def file_kind(path: Path) -> str:
    """The format a file's name announces: csv, csv.gz, tsv, parquet, zip or xlsx."""
    name = path.name.lower()
    for kind in ("csv.gz", "tsv.gz", "csv", "tsv", "parquet", "zip", "xlsx"):
        if name.endswith("." + kind):
            return kind
    raise ShopError(f"{path}: unsupported file type; expected .csv, .csv.gz, .tsv, .parquet, .zip or .xlsx")


def read_raw(path: Path, sep: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a csv / csv.gz / tsv / parquet / xlsx file; text formats come back as all-string columns.

    Refuses (ShopError) a missing, empty or truncated file and one whose bytes are not its named format.
    `columns`, when given, must all be present.
    """
    path = Path(path)
    if not path.is_file():
        raise ShopError(f"{path}: file not found")
    kind, actual = file_kind(path), sniff(path)
    expected = {
        "csv.gz": "gzip",
        "tsv.gz": "gzip",
        "parquet": "Parquet",
        "zip": "zip/xlsx",
        "xlsx": "zip/xlsx",
    }
    if expected.get(kind) != actual:
        raise ShopError(f"{path}: not a {kind} file (its bytes look like {actual or 'text'})")
    if kind == "parquet":
        df = _read_parquet(path)
    elif kind == "xlsx":
        df = read_excel(path, path.read_bytes())
    elif kind == "zip":
        raise ShopError(f"{path}: zip archives are read by the online_retail adapter only")
    else:
        df = _read_text(path, sep or ("\t" if kind.startswith("tsv") else ","), gz=kind.endswith(".gz"))
    if df.empty:
        raise ShopError(f"{path}: file has a header but no rows")
    if columns:
        require_columns(df, columns, path)
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise ShopError(f"{path}: unreadable Parquet file ({_first_line(exc)})") from None


def _read_text(path: Path, sep: str, gz: bool) -> pd.DataFrame:
    try:
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise ShopError(f"{path}: truncated or corrupt gzip file ({_first_line(exc)})") from None
    if not raw.strip():
        raise ShopError(f"{path}: file is empty")
    if b"\x00" in raw[:65536]:
        raise ShopError(f"{path}: not a text file (binary bytes found)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # Home Depot's upstream train.csv is Latin-1
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ShopError(
            f"{path}: not a readable {'tab' if sep == chr(9) else 'comma'}-separated file ({_first_line(exc)})"
        ) from None


def read_excel(path: Path, data: bytes) -> pd.DataFrame:
    """Read the first sheet of an xlsx workbook given as bytes (all cells as read by openpyxl)."""
    try:
        return pd.read_excel(io.BytesIO(data), sheet_name=0, engine="openpyxl")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ShopError(f"{path}: unreadable xlsx workbook ({_first_line(exc)})") from None


def require_columns(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ShopError(f"{path}: missing column(s) {missing} (found {list(df.columns)})")


def as_int(series: pd.Series, path: Path) -> pd.Series:
    """Coerce a column to int64; refuse empty cells and non-integers, quoting the first bad value."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() | (values.notna() & (values != values.round()))
    if bad.any():
        raise ShopError(
            f"{path}: column '{series.name}' must hold integers (row {_row(bad)} has {series[bad].iloc[0]!r})"
        )
    return values.astype("int64")


def as_float(series: pd.Series, path: Path) -> pd.Series:
    """Coerce a column to float64; refuse empty cells and non-numbers, quoting the first bad value."""
    values = pd.to_numeric(series, errors="coerce")
    if values.isna().any():
        raise ShopError(
            f"{path}: column '{series.name}' must hold numbers "
            f"(row {_row(values.isna())} has {series[values.isna()].iloc[0]!r})"
        )
    return values.astype("float64")


def as_datetime(series: pd.Series, path: Path) -> pd.Series:
    """Parse a column of naive timestamps (ISO text or Excel datetimes); refuse unparseable cells."""
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series
    else:
        values = pd.to_datetime(series, errors="coerce", format="ISO8601")
        if values.isna().any():  # other spellings, e.g. the "12/1/2010 8:26" of some CSV exports
            values = pd.to_datetime(series, errors="coerce", format="mixed", dayfirst=False)
    if values.isna().any():
        raise ShopError(
            f"{path}: column '{series.name}' must hold dates "
            f"(row {_row(values.isna())} has {series[values.isna()].iloc[0]!r})"
        )
    return values


def as_id(series: pd.Series) -> pd.Series:
    """Identifiers as strings: a trailing ".0" is dropped (17850.0 -> "17850"); blanks become NA."""
    if pd.api.types.is_float_dtype(series) and (series.dropna() == series.dropna().round()).all():
        return series.astype("Int64").astype("string")
    text = series.astype("string").str.strip()
    decimal = text.str.endswith(".0", na=False)
    if decimal.any():
        text = text.where(~decimal, text.str.replace(r"^(\d+)\.0+$", r"\1", regex=True))
    return text.mask(text.isin(["", "nan", "NaN", "None", "<NA>"]))


def _row(mask: pd.Series) -> int:
    """1-based data row (after the header) of the first True in mask."""
    return int(mask.to_numpy().argmax()) + 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
