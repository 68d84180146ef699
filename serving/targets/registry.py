"""A gateway replica's endpoints by name: those of the platform config, fixed for its life,
and those created through the admin API, which come and go."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from serving.targets import EndpointTarget


class EndpointTargets(Mapping[str, EndpointTarget]):
    """A gateway replica's endpoints: those of the platform config, fixed for its life, and
    those created through the admin API, which come and go."""

    def __init__(self, configured: Mapping[str, EndpointTarget]) -> None:
        self._configured = dict(configured)
        self._created: dict[str, EndpointTarget] = {}

    def __getitem__(self, name: str) -> EndpointTarget:
        target = self._configured.get(name)
        return target if target is not None else self._created[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._configured
        yield from (n for n in list(self._created) if n not in self._configured)

    def __len__(self) -> int:
        return len(self._configured) + len(self._created.keys() - self._configured.keys())

    def created(self) -> set[str]:
        return set(self._created)

    def add(self, name: str, target: EndpointTarget) -> None:
        self._created[name] = target

    def remove(self, name: str) -> None:
        self._created.pop(name, None)
