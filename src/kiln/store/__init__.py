"""Layer 1: generic storage primitives (SQL metadata, content-addressed blobs, key-value).

It stores bytes, rows and keys and never speaks of runs or features.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports

# SQLAlchemy and Alembic (a third of a second) load with the first SQL name asked for.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "references": "kiln.store.references",
            "write_atomically": "kiln.store.files",
            "big_id": "kiln.store._schema",
            "metadata": "kiln.store._schema",
            "VERSION_TABLE": "kiln.store.metadata_store",
            "MetadataStore": "kiln.store.metadata_store",
            "open_metadata_store": "kiln.store.metadata_store",
            **dict.fromkeys(
                ("BlobInfo", "BlobStore", "FsspecBlobStore", "open_blob_store"), "kiln.store.blobs"
            ),
            **dict.fromkeys(
                ("KVStore", "RedisKVStore", "SQLiteKVStore", "open_kv_store"), "kiln.store.kv"
            ),
        },
    )

if TYPE_CHECKING:
    from kiln.store import references
    from kiln.store._schema import big_id, metadata
    from kiln.store.blobs import BlobInfo, BlobStore, FsspecBlobStore, open_blob_store
    from kiln.store.files import write_atomically
    from kiln.store.kv import KVStore, RedisKVStore, SQLiteKVStore, open_kv_store
    from kiln.store.metadata_store import VERSION_TABLE, MetadataStore, open_metadata_store

__all__ = [
    "VERSION_TABLE",
    "BlobInfo",
    "BlobStore",
    "FsspecBlobStore",
    "KVStore",
    "MetadataStore",
    "RedisKVStore",
    "SQLiteKVStore",
    "big_id",
    "metadata",
    "open_blob_store",
    "open_kv_store",
    "open_metadata_store",
    "references",
    "write_atomically",
]
