"""Cookies say who owns a flow.

Layout (64 bits):  round (16) | feature (8) | owner (40)
- round: the agent's install round; after a restart or reconnection the new round is
  installed and then every flow of an older round is deleted.
- feature: which part of the pipeline made the flow (FEATURES).
- owner: a stable 40-bit id of the object the flow belongs to (a pod attachment, a node, ...),
  hashed from its key so that it survives restarts and is the same on every node.
"""

from __future__ import annotations

import hashlib

ROUND_SHIFT = 48
FEATURE_SHIFT = 40
OWNER_MASK = (1 << FEATURE_SHIFT) - 1
FEATURE_MASK = 0xFF << FEATURE_SHIFT
ROUND_MASK = 0xFFFF << ROUND_SHIFT
MAX_ROUND = 0xFFFF

FEATURES = {
    "pipeline": 1,  # table-miss flows and the gateway
    "pod": 2,
    "node": 3,
    "policy": 4,
    "service": 5,
    "affinity": 6,  # flows learned by the switch (sessionAffinity); round 0, never ours to sync
    "cnp": 7,  # ClusterNetworkPolicy rules
}
FEATURE_NAMES = {v: k for k, v in FEATURES.items()}


def owner_id(key: str) -> int:
    """A stable 40-bit id for an owner key (never 0, so 0 means 'no owner')."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=5).digest(), "big")
    return h or 1


def make(feature: str, owner_key: str | None = None) -> int:
    """Cookie bits for a feature and an owner, without the round."""
    own = owner_id(owner_key) if owner_key else 0
    return (FEATURES[feature] << FEATURE_SHIFT) | own


def with_round(cookie: int, rnd: int) -> int:
    if not 0 < rnd <= MAX_ROUND:
        raise ValueError(f"round {rnd} out of range 1..{MAX_ROUND}")
    return (cookie & ~ROUND_MASK) | (rnd << ROUND_SHIFT)


def decode(cookie: int) -> dict:
    """{'round': int, 'feature': str, 'owner': int} for tools."""
    feat = (cookie & FEATURE_MASK) >> FEATURE_SHIFT
    return {
        "round": (cookie & ROUND_MASK) >> ROUND_SHIFT,
        "feature": FEATURE_NAMES.get(feat, f"unknown({feat})"),
        "owner": cookie & OWNER_MASK,
    }
