"""Which cluster objects changed since a reconciler last looked, without walking them all.

The agent's cluster snapshot is an `Objects` dict: every write and removal records its key in
the change set of each subscriber, so a reconciler handles the keys of one event, not the
whole cluster. A plain dict (the unit tests, the tools) has no such record: `Changes` then
finds the changed keys by comparing the objects with the ones it saw last (by identity: the
sources never mutate an object, they replace it), which walks the dict but gives the same
answer."""

from __future__ import annotations


class Objects(dict):
    """A dict of the cluster objects by key that tells its subscribers which keys were written
    or removed (item assignment, `pop`, `del`, `clear`, `update`; nothing else is used on
    it)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._subscribers: list[set] = []

    def subscribe(self) -> set:
        """A set that gets every key written or removed from now on (every key there is now
        too); the subscriber takes keys out of it as it handles them."""
        keys = set(self)
        self._subscribers.append(keys)
        return keys

    def _note(self, key) -> None:
        for s in self._subscribers:
            s.add(key)

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._note(key)

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._note(key)

    def pop(self, key, *default):
        out = super().pop(key, *default)
        self._note(key)
        return out

    def clear(self) -> None:
        keys = list(self)
        super().clear()
        for k in keys:
            self._note(k)

    def update(self, *args, **kw) -> None:
        for k, v in dict(*args, **kw).items():
            self[k] = v


class Changes:
    """The keys of `cluster` that changed since the last `take()` (at first: every key)."""

    def __init__(self, cluster: dict):
        self.cluster = cluster
        self._pending: set | None = cluster.subscribe() if isinstance(cluster, Objects) else None
        self._seen: dict = {}  # plain dict only: key -> object as last seen

    def take(self) -> set:
        if self._pending is not None:
            keys = set(self._pending)  # keys added meanwhile stay for the next take
            self._pending.difference_update(keys)
            return keys
        now = dict(self.cluster)
        seen = self._seen
        keys = {k for k, o in now.items() if seen.get(k) is not o}
        keys |= seen.keys() - now.keys()
        self._seen = now
        return keys
