"""What every handle on a server object shares: its JSON, its id and status, refresh and cancel."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Self

from .http import Transport

__all__ = ["Connection", "Handle"]


class Connection(Protocol):
    """What a handle asks of the client that made it (`Client` is one): JSON requests, and the
    transport for what streams (checkpoints, event streams, uploads)."""

    transport: Transport

    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...


class Handle:
    """A job, sweep or study of the service; `data` is its last known JSON (`refresh()` reads it
    again). Subclasses name their REST collection and their final statuses."""

    collection: ClassVar[str]  # e.g. "/v1/jobs"
    final: ClassVar[frozenset[str]]

    def __init__(self, client: Connection, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    @classmethod
    def read(cls, client: Connection, object_id: str) -> Self:
        """The handle of the object `object_id` of this collection, read now."""
        return cls(client, client.request("GET", f"{cls.collection}/{object_id}"))

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def done(self) -> bool:
        return self.status in self.final

    def refresh(self) -> Self:
        self.data = self.client.request("GET", f"{self.collection}/{self.id}")
        return self

    def cancel(self) -> Self:
        """Ask the service to stop it (what has finished stays readable)."""
        self.data = self.client.request("POST", f"{self.collection}/{self.id}/cancel", repeatable=True)
        return self
