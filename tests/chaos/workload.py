"""The workload: scans at every gate's lanes and revocations issued at the hub, seeded.

Mostly fresh tickets entering at a random gate; some presented at two or three gates at once (the
double admissions the venue can only detect, not prevent, while gates cannot know of each
other); used tickets presented again elsewhere (must be refused once the gate could know); exits
and re-entries; a few tickets revoked at the hub mid-run, then presented.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field

from agent import tickets
from tests.chaos.schedule import Timeline
from tests.chaos.venue import GATE_IDS, Venue
from tests.hubproc import hub_cli

_VERSION = re.compile(r"revocation list version (\d+)")


@dataclass
class Workload:
    venue: Venue
    timeline: Timeline
    rng: random.Random
    scans: int = 0
    missed: int = 0  # scans at a gate that was down (nobody read them)
    revoked: dict[str, int] = field(default_factory=dict)  # ticket_ref -> list version
    used: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    revoked_texts: list[str] = field(default_factory=list)

    def _present(self, gate_id: str, lane: str, text: str) -> None:
        self.scans += 1
        if not self.venue.gates[gate_id].scan(lane, text):
            self.missed += 1

    async def run(self, duration_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        self.unused = [self.venue.iss.ticket(event=1) for _ in range(200)]
        revocations = [duration_s * f for f in sorted(self.rng.uniform(0.1, 0.8) for _ in range(3))]
        start = loop.time()
        revoking: list[asyncio.Task[None]] = []
        while loop.time() < end:
            if revocations and loop.time() - start >= revocations[0]:
                revocations.pop(0)
                revoking.append(asyncio.create_task(self._revoke()))
            await self._step()
            await asyncio.sleep(self.rng.uniform(0.08, 0.25))
        await asyncio.gather(*revoking)

    async def _step(self) -> None:
        r = self.rng.random()
        gate = self.rng.choice(GATE_IDS)
        if r < 0.55 or not self.used:
            text = self._fresh()
            self._present(gate, "in", text)
            self.used.append(text)
        elif r < 0.67:  # the same ticket at several gates at once
            text = self._fresh()
            for g in self.rng.sample(GATE_IDS, self.rng.randint(2, 3)):
                self._present(g, "in", text)
            self.used.append(text)
        elif r < 0.82:  # a used ticket again, elsewhere
            self._present(gate, "in", self.rng.choice(self.used))
        elif r < 0.92:  # an exit; sometimes straight back in at another gate
            text = self.rng.choice(self.used)
            self._present(gate, "out", text)
            if self.rng.random() < 0.5:
                self._present(self.rng.choice(GATE_IDS), "in", text)
        elif self.revoked_texts:  # a revoked ticket tried
            self._present(gate, "in", self.rng.choice(self.revoked_texts))
        else:
            self._present(gate, "in", self._fresh())

    def _fresh(self) -> str:
        return self.unused.pop() if self.unused else self.venue.iss.ticket(event=1)

    async def _revoke(self) -> None:
        """Revoke a ticket nobody used yet at the hub (retried while the store is down)."""
        text = self._fresh()
        for _ in range(20):
            done = await asyncio.to_thread(hub_cli, self.venue.setup, "revoke", text)
            found = _VERSION.search(done.stdout)
            if done.returncode == 0 and found:
                self.revoked[tickets.parse(text).ticket_ref] = int(found.group(1))
                self.revoked_texts.append(text)
                self.timeline.note(f"revoked a ticket: list version {found.group(1)}")
                return
            await asyncio.sleep(0.5)
        self.timeline.note("revocation failed 20 times")
