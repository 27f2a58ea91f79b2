"""A folder of Parquet log files on the local disk or in an object store, through pyarrow's filesystems.

A location is a local path, or a URI pyarrow.fs understands: `s3://bucket/requests` (with `?endpoint_override=
host:port&scheme=http` for MinIO; credentials from the usual AWS environment), `gs://...`, `hdfs://...`,
`file:///...`. Local files are written to a temporary name and renamed; an object store's PUT makes an object
appear whole or not at all, so readers never see a partial file either way.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.errors import ShopError
from core.io import atomic_path


def is_uri(location: str | Path) -> bool:
    """Whether `location` names a filesystem by scheme (`s3://...`) rather than a local path."""
    return "://" in str(location)


class LogFolder:
    """List, write, read and delete `*.parquet` files in one folder of a local or remote filesystem."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        if is_uri(self.location):
            try:
                self.fs, path = pafs.FileSystem.from_uri(self.location)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise ShopError(f"{self.location}: not a filesystem location pyarrow can open ({exc})") from None
        else:
            self.fs, path = pafs.LocalFileSystem(), str(Path(self.location).resolve())
        self.path = path.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        return self.location

    def files(self, prefix: str = "") -> list[str]:
        """Names of the folder's Parquet files starting with `prefix`, sorted; [] when the folder does not exist."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.startswith(prefix) and i.base_name.endswith(".parquet")
        )

    def write(self, table: pa.Table, name: str) -> None:
        """Write `table` as file `name`, whole or not at all."""
        if self.local:
            with atomic_path(Path(self.path) / name) as tmp:
                pq.write_table(table, tmp)
            return
        self.fs.create_dir(self.path, recursive=True)
        pq.write_table(table, f"{self.path}/{name}", filesystem=self.fs)

    def read(self, name: str) -> pa.Table:
        return pq.read_table(f"{self.path}/{name}", filesystem=self.fs)

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(f"{self.path}/{name}")
        except FileNotFoundError:
            pass
