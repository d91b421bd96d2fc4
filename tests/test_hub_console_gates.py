"""One ticket id everywhere, with real gates: two gate daemons linked to a real hub process; a
ticket admitted at one gate and refused three times at the other. The gates' outcomes, their
`events`, the hub's alert, `hub ticket` and the console's search (headless Chromium) all name the
ticket by the same short id, and the search shows its whole history across both gates.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Reason, Verdict
from tests.browser import Browser
from tests.hubgate import get_json, scan, write_gate
from tests.hubproc import EXE, ROOT, HubProcess, add_token, hub_cli, write_hub_config
from tests.polling import until


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(scan(text))
    assert outcome is not None
    return outcome


def _events(conf: config.Config) -> list[dict[str, object]]:
    done = subprocess.run(
        [*EXE, "events", "--config", str(conf.path), "--json"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_one_short_id_from_the_gates_to_the_console(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    console = add_token(setup, console="security")
    confs = []
    for gate_id, name in (("gate-a", "North A"), ("gate-b", "South B")):
        token = add_token(setup, gate_id=gate_id, name=name)
        path = write_gate(
            tmp_path / gate_id, keys_dir, gate_id=gate_id, name=name, url=setup.url, token=token
        )
        confs.append(config.load(path))
    text = iss.ticket(event=1, zones=[1])
    with HubProcess(setup):
        async with open_gate(confs[0]) as a, open_gate(confs[1]) as b:
            await until(
                lambda: all(g.hub is not None and g.hub.online for g in (a, b)), what="online"
            )
            admitted = await _present(a, text)
            assert admitted.decision.verdict is Verdict.ADMIT and admitted.ticket is not None
            sid = admitted.ticket.short_id

            ref = admitted.ticket.ticket_ref

            async def learnt() -> bool:
                return any(h.gate_id == "gate-a" for h in await b.journal.history(ref))

            await until(learnt, what="gate-b learns the admission")
            for _ in range(3):
                refused = await _present(b, text)
                assert refused.decision.reason is Reason.ALREADY_USED
                assert refused.ticket is not None and refused.ticket.short_id == sid

            async def alerted() -> list[dict[str, object]]:
                page = await asyncio.to_thread(get_json, setup.url + "/v1/alerts?after=0", console)
                return [a for a in page["alerts"] if a["kind"] == "repeated_denials"]

            await until(alerted, what="the repeated denials alert")
            (alert,) = await alerted()
            assert alert["ticket"] == sid
            context = alert["context"]
            assert isinstance(context, list)
            assert {(c["gate"], c["lane"], c["reason"]) for c in context} == {
                ("South B", "in", "already_used")
            }

            found = hub_cli(setup, "ticket", text)
            assert found.returncode == 0, found.stderr
            assert (
                found.stdout.splitlines()[0]
                == f"ticket {sid}: 4 rows at 2 gates (North A, South B)"
            )

            async with Browser(tmp_path / "browser", width=1280, height=900) as page:
                await page.goto(f"{setup.url}/console#token={console}")
                await page.wait_for(
                    "document.querySelector(\"#alerts .alert[data-kind='repeated_denials']\")"
                )
                assert f"ticket {sid}" in await page.text("#alerts .alert .ticket")
                await page.evaluate(
                    f"(() => {{ document.getElementById('ticket-query').value = '{sid}';"
                    " document.querySelector('#ticket-form button').click(); })()"
                )
                await page.wait_for("!document.getElementById('ticket-history').hidden")
                gates = await page.evaluate(
                    "[...document.querySelectorAll('#ticket-history td.gate')]"
                    ".map(n => n.textContent)"
                )
                assert sorted(gates) == ["North A", "South B", "South B", "South B"]
                assert text not in await page.evaluate("document.body.textContent")
                assert page.console_errors == []
    for conf in confs:
        assert {e["ticket"] for e in _events(conf)} == {sid}
