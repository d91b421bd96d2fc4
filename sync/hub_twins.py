"""Two units heartbeating as one gate: a copy of the gate's token running beside the gate.

Each heartbeat names the kernel boot id of the unit that sent it (``Heartbeat.boot_id``). One
unit's boot id changes only when it boots again, and a boot id never comes back, so a gate's
heartbeats whose boot id returns to one it had left are from two units at once: the gate and a
copy of its token (a stolen unit's disk copied, or its token file). The hub then raises an
integrity alert once per pair, naming both boot ids and the addresses they came from, so the
security team learns of the copy before it squats the gate's numbers or while its heartbeats
hide the gate's own faults in the console. Addresses alone would not do: a dual-stack gate
reaches the hub over IPv4 and IPv6 in turn.

What a copy can forge it can also hide: one that sends the gate's own boot id is not told
apart here (its rows still are: :mod:`sync.hub_rules`). Each hub process keeps this for its own
requests; with several processes behind one address a pair is seen when both units' heartbeats
reach the same process now and then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync.hub_plan import NewAlert
from sync.protocol_fields import MAX_DETAIL

MAX_LEFT = 8  # boot ids a gate left that are remembered, per gate
MAX_PAIRS = 8  # alerts per gate (a copy that boots again is a new pair), then silence


@dataclass
class _Boots:
    current: str
    address: str
    left: dict[str, str] = field(default_factory=dict)  # boot id left -> its last address
    told: set[frozenset[str]] = field(default_factory=set)  # pairs already alerted


class Twins:
    """The boot ids each gate's heartbeats came with, in this hub process."""

    def __init__(self) -> None:
        self._gates: dict[str, _Boots] = {}

    def heartbeat(self, gate_id: str, boot_id: str, address: str, now: float) -> NewAlert | None:
        """Note a heartbeat of ``gate_id`` from ``address``; returns the alert to raise when its
        boot id is one the gate had left (once per pair), else None."""
        if not boot_id:  # a gate of an older version says none
            return None
        boots = self._gates.get(gate_id)
        if boots is None:
            self._gates[gate_id] = _Boots(boot_id, address)
            return None
        if boot_id == boots.current:
            boots.address = address
            return None
        before, before_address = boots.current, boots.address
        boots.left[before] = before_address
        returned = boots.left.pop(boot_id, None)
        while len(boots.left) > MAX_LEFT:
            del boots.left[next(iter(boots.left))]  # the oldest left
        boots.current, boots.address = boot_id, address
        pair = frozenset((before, boot_id))
        if returned is None or pair in boots.told or len(boots.told) >= MAX_PAIRS:
            return None
        boots.told.add(pair)
        detail = (
            f"two units heartbeat as gate {gate_id}: boot {boot_id[:8]} from {address} and boot"
            f" {before[:8]} from {before_address} alternate (a copy of its token?): revoke the"
            " gate's tokens, then give it a new one"
        )
        return NewAlert(
            "integrity", "", (gate_id,), (now,), (), detail[:MAX_DETAIL],
            f"twins:{gate_id}:{':'.join(sorted(pair))}", gate_ids=(gate_id,),
        )  # fmt: skip
