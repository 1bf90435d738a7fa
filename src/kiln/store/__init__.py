"""Layer 1: generic storage primitives (SQL metadata, content-addressed blobs, key-value).

It stores bytes, rows and keys and never speaks of runs or features.
"""

from kiln.store._schema import big_id, metadata
from kiln.store.blobs import BlobInfo, BlobStore, FsspecBlobStore, open_blob_store
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
]
