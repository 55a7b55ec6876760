"""ofproto/trace output -> passes and steps (the flow table lookups it printed)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flows import tables

DEFAULT_SPORT = 40000
CT_NEW = "trk,new"
CT_REPLY = "trk,est,rpl"
CT_PASSES = 4  # --ct-next given this many times: more than any path here recirculates
MAX_HOPS = 4
PROTOS = ("tcp", "udp", "icmp")


class TraceError(RuntimeError):
    pass


class NotFoundError(TraceError):
    """A pod, Service or node the trace was asked about is not known."""


class UnreachableError(TraceError):
    """An agent or an ovs-vswitchd did not answer (or answered what cannot be read)."""


@dataclass
class Step:
    """One flow table lookup as ofproto/trace prints it."""

    bridge: str
    table_id: int
    match: str  # the matched flow's match ("" for a catch-all)
    priority: int | None  # None: no flow matched
    cookie: int | None
    actions: list[str] = field(default_factory=list)  # lines under it, "->" notes included
    depth: int = 0  # >0: inside a resubmit
    owner: str | None = None  # the owner key of the matched flow (filled in from the agent)

    @property
    def table(self) -> str:
        return tables.name_of(self.table_id)

    @property
    def is_miss(self) -> bool:
        return self.priority == 0 and not self.match

    def _acts(self) -> list[str]:
        return [a for a in self.actions if not a.startswith(("->", ">>"))]

    @property
    def goto(self) -> int | None:
        for a in self._acts():
            m = re.match(r"goto_table:(\d+)$", a)
            if m:
                return int(m.group(1))
        return None

    @property
    def recirc_table(self) -> int | None:
        for a in self._acts():
            m = re.match(r"ct\((?:[^()]|\([^()]*\))*?\btable=(\d+)", a)
            if m:
                return int(m.group(1))
        return None

    @property
    def outputs(self) -> list[int]:
        out = []
        for a in self.actions:
            m = re.match(r"-> output port is (\d+)$", a)
            if m:
                out.append(int(m.group(1)))
        return out

    @property
    def in_port_output(self) -> bool:
        return "IN_PORT" in self._acts() or "in_port" in self._acts()

    @property
    def to_controller(self) -> bool:
        return any(a.lower().startswith("controller") for a in self._acts())

    @property
    def drops(self) -> bool:
        """The packet ends here without output (OVS prints "drop" for an empty action list)."""
        acts = self._acts()
        return (
            self.goto is None
            and self.recirc_table is None
            and not self.outputs
            and not self.in_port_output
            and not self.to_controller
            and not any(a.startswith(("resubmit", "output", "NORMAL")) for a in acts)
        )

    def action_text(self) -> str:
        """The actions, without what OVS prints inside ct() (its nested "nat"/"drop")."""
        shown: list[str] = []
        for a in self._acts():
            if shown and shown[-1].startswith("ct(") and (a == "drop" or a.startswith("nat")):
                continue
            shown.append(a)
        return ", ".join(shown)


@dataclass
class Pass:
    """One pass through the pipeline: the first, or one resumed after a recirculation."""

    flow: str = ""
    bridge: str = ""  # the traced bridge (the first one printed; others follow patch/tunnel)
    recirc_id: str | None = None
    ct_state: str | None = None  # what conntrack said, for a resumed pass
    nat_from: str = ""  # OVS's simulated NAT: the fields before ...
    nat_to: str = ""  # ... and after
    resumed_at: int | None = None
    steps: list[Step] = field(default_factory=list)
    final_flow: str = ""
    megaflow: str = ""
    datapath_actions: str = ""

    def own(self) -> list[Step]:
        """The traced bridge's lookups (resubmits included)."""
        return [s for s in self.steps if s.bridge == self.bridge]

    def top(self) -> list[Step]:
        """The traced bridge's lookups in pipeline order, without those inside a resubmit."""
        return [s for s in self.own() if s.depth == 0]


_TABLE_LINE = re.compile(r"^(?P<indent> *)(?P<table>\d+)\. (?P<rest>.*)$")
_RULE = re.compile(
    r"^(?:(?P<match>.*?),? )?priority (?P<prio>\d+)(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?$"
)
_BRIDGE = re.compile(r'^bridge\("(?P<name>[^"]+)"\)')
_RECIRC = re.compile(r"^recirc\((?P<id>0x[0-9a-f]+)\)")
_CT_STATE = re.compile(r"ct_state=(?P<state>[a-z|]+)")


def parse(text: str) -> list[Pass]:
    """ofproto/trace output -> its passes, each with the tables it visited."""
    passes: list[Pass] = []
    cur: Pass | None = None
    pending = Pass()  # header info of the next resumed pass
    bridge = ""
    step: Step | None = None
    at_depth: dict[int, Step] = {}  # the last step printed at each resubmit depth
    in_header = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("====="):
            in_header = not in_header
            if in_header:
                pending = Pass()
            continue
        if in_header:
            s = line.strip()
            m = _RECIRC.match(s)
            if m:
                pending.recirc_id = m.group("id")
                st = _CT_STATE.search(s)
                pending.ct_state = st.group("state") if st else None
            elif s.startswith("Initial flow:"):
                pending.nat_from = s.split(":", 1)[1].strip()
            elif s.startswith("Modified flow:"):
                pending.nat_to = s.split(":", 1)[1].strip()
            continue
        if line.startswith("Flow: "):
            cur = pending
            cur.flow = line[len("Flow: ") :].strip()
            pending = Pass()
            passes.append(cur)
            bridge, step, at_depth = "", None, {}
            continue
        if cur is None:
            continue
        if line.startswith("Final flow: "):
            cur.final_flow = line.split(": ", 1)[1].strip()
            step = None
            continue
        if line.startswith("Megaflow: "):
            cur.megaflow = line.split(": ", 1)[1].strip()
            continue
        if line.startswith("Datapath actions: "):
            cur.datapath_actions = line.split(": ", 1)[1].strip()
            continue
        m = _BRIDGE.match(line)
        if m:
            bridge, step, at_depth = m.group("name"), None, {}
            cur.bridge = cur.bridge or bridge
            continue
        if not line.strip() or set(line.strip()) == {"-"}:
            continue
        m = _TABLE_LINE.match(line)
        if m:
            rest = m.group("rest").strip()
            # OVS indents a table line 8 more per resubmit level (" 0.", "10.", "    33.", …)
            depth = (len(m.group("indent")) + 4) // 8
            r = _RULE.match(rest)
            if r:
                step = Step(
                    bridge,
                    int(m.group("table")),
                    (r.group("match") or "").strip(),
                    int(r.group("prio")),
                    int(r.group("cookie"), 16) if r.group("cookie") else None,
                    depth=depth,
                )
            else:  # "No match." and the like
                step = Step(bridge, int(m.group("table")), rest, None, None, depth=depth)
            cur.steps.append(step)
            at_depth = {d: st for d, st in at_depth.items() if d < depth}
            at_depth[depth] = step
            continue
        s = line.strip()
        if step is None:
            m2 = re.match(r"Resuming from table (\d+)", s)
            if m2:
                cur.resumed_at = int(m2.group(1))
            continue
        # action lines sit 4 deeper than their table line: 4, 12, 20, … by resubmit level; the
        # outer step's actions continue after a nested lookup at the outer indentation
        indent = len(line) - len(line.lstrip(" "))
        owner = at_depth.get(max(0, (indent - 4) // 8), step)
        owner.actions.append(s)
    return passes


def flow_fields(flow: str) -> dict[str, str]:
    """'tcp,in_port=4,nw_src=…' -> {'tcp': '', 'in_port': '4', 'nw_src': '…'}."""
    out = {}
    for item in flow.split(","):
        item = item.strip()
        if not item:
            continue
        k, _, v = item.partition("=")
        out[k] = v
    return out
