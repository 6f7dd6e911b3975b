"""The raw archive: Fit datasets and device messages per user-day, files by default, Blob in production.

Objects are addressed by ``(kind, day, user_key, name)``; every segment is checked so no user-derived value
can become a path outside the archive. Writes replace whole objects, so a re-run never duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .keys import check_user_key, safe_segment


def object_name(kind: str, day: str, user_key: str, name: str) -> str:
    return "/".join(
        (
            safe_segment(kind),
            f"date={safe_segment(day)}",
            f"user={check_user_key(user_key)}",
            safe_segment(name),
        )
    )


class Archive(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...


class LocalArchive:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        for part in parts:
            safe_segment(part)
        path = self.root.joinpath(*parts).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"archive object escapes the archive root: {name!r}")
        return path

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path.exists() else None

    def list(self, prefix: str = "") -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                rel = path.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    yield rel

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
