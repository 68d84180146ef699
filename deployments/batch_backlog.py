"""The partition controller's view of batch work: the batch lines per endpoint, read from the
platform store. Built here and handed to the controller, so that autoscaling/ need not know
the batch store (nor serving/ the controller)."""

from __future__ import annotations

from typing import Any


class StoreBatchBacklog:
    """Callable: {endpoint: (queued, running)} batch lines, one grouped query per call.
    Sent to the controller's actor as its database URL; the store is opened there, once."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._store = None

    def __call__(self) -> dict[str, tuple[int, int]]:
        from serving.batch import batch_store
        from serving.tenancy import Store

        if self._store is None:
            self._store = Store(self.database_url)
        return dict(batch_store.backlog_by_model(self._store))

    def __getstate__(self) -> dict[str, Any]:
        return {"database_url": self.database_url, "_store": None}
