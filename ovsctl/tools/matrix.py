"""The pod x pod reachability matrix as text (probe, reachability, the demo)."""

from __future__ import annotations


def render_matrix(res: dict[str, bool]) -> str:
    """Rows: source pods; columns: destination pod:port/proto; '.' reachable, 'X' blocked."""
    srcs = sorted({k.split("->")[0] for k in res})
    dsts = sorted({k.split("->")[1] for k in res})
    width = max([len(s) for s in srcs] + [4])
    lines = [" " * (width + 1) + " ".join(f"{i:>2}" for i in range(len(dsts)))]
    for s in srcs:
        row = []
        for d in dsts:
            v = res.get(f"{s}->{d}")
            row.append(" -" if v is None else (" ." if v else " X"))
        lines.append(f"{s:<{width}} " + " ".join(row))
    lines.append("")
    lines += [f"{i:>2}: {d}" for i, d in enumerate(dsts)]
    ok = sum(res.values())
    lines.append(f"\n{ok}/{len(res)} reachable ('.' reachable, 'X' blocked, '-' self)")
    return "\n".join(lines)
