"""Every register bit the pipeline uses, named in one place with its layout."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegField:
    reg: int  # NXM register number (reg0..reg15)
    start: int  # first bit
    end: int  # last bit, inclusive
    doc: str

    @property
    def mask(self) -> int:
        return ((1 << (self.end - self.start + 1)) - 1) << self.start

    def value(self, v: int) -> int:
        if v < 0 or v > (self.mask >> self.start):
            raise ValueError(f"value {v} does not fit reg{self.reg}[{self.start}..{self.end}]")
        return v << self.start

    @property
    def nxm(self) -> str:
        """Name for `move` (only whole registers are moved)."""
        return f"reg{self.reg}"

    def match(self, v: int) -> tuple[str, str]:
        """Match field and value as ovs-ofctl prints them: ('reg0', '0x2/0xf'), ('reg3', '0/0xffff')."""
        val = "0" if self.value(v) == 0 else f"{self.value(v):#x}"
        full = self.mask == 0xFFFFFFFF
        return f"reg{self.reg}", val if full else f"{val}/{self.mask:#x}"


# reg0[0..3]: which kind of port the packet entered by.
PKT_SOURCE = RegField(0, 0, 3, "port kind the packet entered by")
FROM_GATEWAY = 1
FROM_POD = 2
FROM_TUNNEL = 3

# reg0[4]: the packet belongs to an established (or related) connection: policy is skipped.
ESTABLISHED = RegField(0, 4, 4, "established connection: skip policy")

# reg0[5]: SessionAffinity found this client's endpoint (in reg4 and reg5[0..15]).
AFFINITY = RegField(0, 5, 5, "SessionAffinity hit: endpoint in reg4/reg5")

# reg0[6]: HairpinSNAT made this packet's source the hairpin address (a pod reaching itself
# through a Service): ingress policy judges it as the pod, not as an address in a peer CIDR.
HAIRPIN = RegField(0, 6, 6, "hairpin: the source is the pod itself (HairpinSNAT)")

# reg4, reg5[0..15]: the endpoint's IP and port remembered by SessionAffinity.
AFFINITY_IP = RegField(4, 0, 31, "endpoint IP from SessionAffinity")
AFFINITY_PORT = RegField(5, 0, 15, "endpoint port from SessionAffinity")

# xxreg2 = reg8..reg11 (reg8 the most significant word): the IPv6 endpoint address remembered
# by SessionAffinity (the port stays in reg5[0..15]).
AFFINITY_IP6 = tuple(
    RegField(
        8 + i, 0, 31, f"IPv6 endpoint from SessionAffinity, bits {127 - 32 * i}..{96 - 32 * i}"
    )
    for i in range(4)
)

# reg2: the output port, chosen by L2Forwarding, used by Output.
OUT_PORT = RegField(2, 0, 31, "output port")

# reg3[0..15]: the endpoint index ServiceLB picked for a new Service connection.
ENDPOINT = RegField(3, 0, 15, "endpoint index picked by ServiceLB")

# reg1: scratch space within one table's actions (e.g. swapping ARP addresses).
SCRATCH = RegField(1, 0, 31, "scratch within one flow's actions")

ALL = {
    "ENDPOINT": ENDPOINT,
    "PKT_SOURCE": PKT_SOURCE,
    "ESTABLISHED": ESTABLISHED,
    "AFFINITY": AFFINITY,
    "AFFINITY_IP": AFFINITY_IP,
    "AFFINITY_PORT": AFFINITY_PORT,
    **{f"AFFINITY_IP6_{i}": f for i, f in enumerate(AFFINITY_IP6)},
    "OUT_PORT": OUT_PORT,
    "SCRATCH": SCRATCH,
}
