"""One reconciler per feature: cluster changes -> {owner: frozenset[Flow]}, each with its own
caches (nodes, policy, services). None of them touches the host."""

from __future__ import annotations

import logging

from ovsctl.agent import LOGGER

log = logging.getLogger(LOGGER)


def finished(pod) -> bool:
    """A pod in phase Succeeded or Failed is no policy peer, no endpoint and holds no address
    in any flow: its IP goes back to IPAM and may be another pod's already (Antrea #6507)."""
    return pod.phase in ("Succeeded", "Failed")


class SkipLog:
    """What cannot be programmed, logged once per object version (not on every event)."""

    def __init__(self):
        self.seen: dict[tuple, tuple] = {}

    def __call__(self, key: tuple, version, why: str) -> None:
        seen = self.seen.setdefault(key, (version, set()))
        if seen[0] is not version and seen[0] != version:
            seen = self.seen[key] = (version, set())
        if why not in seen[1]:
            seen[1].add(why)
            log.error("%s", why)

    def forget(self, key: tuple) -> None:
        self.seen.pop(key, None)
