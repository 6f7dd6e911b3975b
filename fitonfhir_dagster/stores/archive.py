"""The raw archive: Fit datasets and device messages per user-day, files by default, Blob in production.

Objects are addressed by ``(kind, day, user_key, name)``; every segment is checked so no user-derived value
can become a path outside the archive. Writes replace whole objects, so a re-run never duplicates.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

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

    def put_chunks(self, name: str, chunks: Iterable[bytes]) -> None:
        """``put`` of the concatenated ``chunks``, without holding them all in memory (a heavy user-day)."""
        ...

    def get(self, name: str) -> bytes | None: ...

    def get_lines(self, name: str) -> Iterator[bytes] | None:
        """The object's lines (each with its ``\\n``, the last one maybe without), read a chunk at a time;
        None when there is no such object."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose name starts with ``prefix`` (not ""); returns how many."""
        ...


def _private_dirs(path: Path, top: Path) -> None:
    """Create ``path`` and its missing parents (never ``top`` or above) as 0700 directories: mkdir's
    mode is masked by the umask and not applied to parents, so each one is set explicitly."""
    missing = []
    while not path.exists() and path != top and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # a concurrent writer made it
        os.chmod(directory, 0o700)


class LocalArchive:
    """Files under ``root``: health data, so directories are 0700 and files 0600 whatever the umask."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        _private_dirs(self.root, Path(self.root.anchor))

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        for part in parts:
            safe_segment(part)
        path = self.root.joinpath(*parts).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"archive object escapes the archive root: {name!r}")
        return path

    def put(self, name: str, data: bytes) -> None:
        self.put_chunks(name, (data,))

    def put_chunks(self, name: str, chunks: Iterable[bytes]) -> None:
        path = self._path(name)
        _private_dirs(path.parent, self.root)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
            os.replace(tmp, path)  # readers see the old object or the whole new one, never a part
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path.exists() else None

    def get_lines(self, name: str) -> Iterator[bytes] | None:
        path = self._path(name)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return None
        return _file_lines(fh)

    def list(self, prefix: str = "") -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                rel = path.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    yield rel

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        names = list(self.list(check_prefix(prefix)))
        for name in names:
            self.delete(name)
        return len(names)


def _file_lines(fh: Any) -> Iterator[bytes]:
    with fh:
        yield from fh


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (with their ``\\n``) of a byte stream that arrives in arbitrary chunks."""
    pending: list[bytes] = []  # the start of a line that has not ended yet (a long line: many chunks)
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        pending.append(parts[0])
        yield b"".join(pending) + b"\n"
        for part in parts[1:-1]:
            yield part + b"\n"
        pending = [parts[-1]]
    rest = b"".join(pending)
    if rest:
        yield rest


def check_prefix(prefix: str) -> str:
    """A deletion prefix: non-empty and made of safe segments (a trailing ``/`` allowed)."""
    if not isinstance(prefix, str) or not prefix.strip("/"):
        raise ValueError("refusing to delete by an empty prefix (that would be the whole archive)")
    for part in prefix.rstrip("/").split("/"):
        safe_segment(part)
    return prefix
