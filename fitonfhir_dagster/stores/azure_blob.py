"""The raw archive on Azure Blob Storage: the production twin of ``LocalArchive``.

Blob names are the archive's object names (``kind/date=.../user=.../name``); every segment is checked
with the same rule as the local archive, so no user-derived value can shape an unexpected blob name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from ..settings import ConfigError, Settings
from .keys import safe_segment


def check_blob_name(name: str) -> str:
    """Refuse absolute names, ``..``, empty or odd segments (raises ValueError naming the object)."""
    if not isinstance(name, str):
        raise ValueError(f"unsafe archive object name {name!r}: not a string")
    try:
        for part in name.split("/"):
            safe_segment(part)
    except ValueError as exc:
        raise ValueError(f"unsafe archive object name {name!r}: {exc}") from None
    return name


class BlobArchive:
    """``Archive`` on one blob container; ``put`` overwrites, ``list`` yields names in blob (sorted) order."""

    def __init__(self, container: ContainerClient, *, create_container: bool = True) -> None:
        self.container = container
        if create_container:
            with contextlib.suppress(ResourceExistsError):
                container.create_container()

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str) -> BlobArchive:
        service = BlobServiceClient.from_connection_string(connection_string)
        return cls(service.get_container_client(container))

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobArchive:
        """FITONFHIR_AZURE_STORAGE_CONNECTION_STRING, else FITONFHIR_AZURE_BLOB_ENDPOINT + DefaultAzureCredential;
        container FITONFHIR_AZURE_BLOB_CONTAINER."""
        if settings.azure_storage_connection_string:
            return cls.from_connection_string(
                settings.azure_storage_connection_string, settings.azure_blob_container
            )
        if not settings.azure_blob_endpoint:
            raise ConfigError(
                "Azure Blob Storage is not configured: set FITONFHIR_AZURE_STORAGE_CONNECTION_STRING "
                "or FITONFHIR_AZURE_BLOB_ENDPOINT"
            )
        from azure.identity import DefaultAzureCredential

        service = BlobServiceClient(
            account_url=settings.azure_blob_endpoint, credential=DefaultAzureCredential()
        )
        return cls(service.get_container_client(settings.azure_blob_container))

    def put(self, name: str, data: bytes) -> None:
        self.container.upload_blob(check_blob_name(name), data, overwrite=True)

    def put_chunks(self, name: str, chunks: Iterable[bytes]) -> None:
        # An iterable is uploaded as staged blocks and committed at the end: readers never see a part.
        self.container.upload_blob(check_blob_name(name), iter(chunks), overwrite=True)

    def get(self, name: str) -> bytes | None:
        try:
            return self.container.download_blob(check_blob_name(name)).readall()
        except ResourceNotFoundError:
            return None

    def get_lines(self, name: str) -> Iterator[bytes] | None:
        from .archive import split_lines

        try:
            download = self.container.download_blob(check_blob_name(name))
        except ResourceNotFoundError:
            return None
        return split_lines(download.chunks())

    def list(self, prefix: str = "") -> Iterator[str]:
        yield from self.container.list_blob_names(name_starts_with=prefix or None)

    def delete(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.container.delete_blob(check_blob_name(name))

    def delete_prefix(self, prefix: str) -> int:
        from .archive import check_prefix

        names = list(self.list(check_prefix(prefix)))
        for name in names:
            self.delete(name)
        return len(names)
