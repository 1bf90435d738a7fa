"""Damage a stored blob the way a failing disk or a partial copy would."""

from __future__ import annotations

from pathlib import Path

from kiln.core import get_settings


def blob_path(digest: str) -> Path:
    root = Path(get_settings().artifact_uri)
    return root / "sha256" / digest[:2] / digest[2:4] / digest


def flip_a_byte(digest: str) -> None:
    path = blob_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(digest: str) -> None:
    path = blob_path(digest)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
