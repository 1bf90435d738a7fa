"""Files published whole: a table written aside, forced to disk and linked under its final
name in one step, so a reader sees a complete file or none, and a published file is never
replaced (the prediction log's parts, monitoring's label batches)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["write_atomically"]


def write_atomically(directory: Path, name: str, table: pa.Table) -> bool:
    """Write ``table`` as ``directory/name``, fsynced and published in one step.

    Returns False, writing nothing, when that name is taken: a published file is never
    replaced. Only a hidden ``.<name>.tmp`` can be left behind by a crash.
    """
    target = directory / name
    tmp = directory / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)  # publishes without ever replacing another file
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            if target.exists():
                return False
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
