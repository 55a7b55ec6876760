"""The pod x pod reachability matrix as text (probe, reachability, the demo)."""

from __future__ import annotations

from collections.abc import Callable

TIER_LETTERS = {"Admin": "A", "NetworkPolicy": "N", "Baseline": "B", "default": "."}


def _grid(res: dict, cell: Callable[[object], str]) -> list[str]:
    """Rows: source pods; columns: destination pod:port/proto (numbered, listed below)."""
    srcs = sorted({k.split("->")[0] for k in res})
    dsts = sorted({k.split("->")[1] for k in res})
    width = max([len(s) for s in srcs] + [4])
    lines = [" " * (width + 1) + " ".join(f"{i:>2}" for i in range(len(dsts)))]
    for s in srcs:
        row = []
        for d in dsts:
            v = res.get(f"{s}->{d}")
            row.append(" -" if v is None else f" {cell(v)}")
        lines.append(f"{s:<{width}} " + " ".join(row))
    lines.append("")
    lines += [f"{i:>2}: {d}" for i, d in enumerate(dsts)]
    return lines


def render_matrix(res: dict[str, bool]) -> str:
    """Rows: source pods; columns: destination pod:port/proto; '.' reachable, 'X' blocked."""
    lines = _grid(res, lambda v: "." if v else "X")
    ok = sum(res.values())
    lines.append(f"\n{ok}/{len(res)} reachable ('.' reachable, 'X' blocked, '-' self)")
    return "\n".join(lines)


def render_tiers(res: dict[str, str]) -> str:
    """Each pair's deciding tier as a letter: A Admin (ClusterNetworkPolicy), N NetworkPolicy,
    B Baseline, . none (the default allows)."""
    lines = _grid(res, lambda v: TIER_LETTERS.get(v, "?"))
    n = {t: sum(v == t for v in res.values()) for t in TIER_LETTERS}
    lines.append(
        f"\nA Admin {n['Admin']}, N NetworkPolicy {n['NetworkPolicy']}, B Baseline "
        f"{n['Baseline']}, . default {n['default']} ('-' self)"
    )
    return "\n".join(lines)
