"""pretix_sig1 vs TK1: parse, verify, and parse+verify time per ticket, interleaved in one run.

pretix_sig1 tickets are the real server's secrets from tests/vectors/pretix (every case whose
signature is valid) checked with the event's key; without that folder, secrets of the same shape
are signed with a local key. TK1 tickets are signed with a local Ed25519 issuer key. Each round
measures one ticket of each format back to back, so both see the same CPU state.

    .venv/bin/python tests/bench/bench_pretix.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import pretix_event, tickets, trust
from agent.tickets import tk1

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "pretix"
WARMUP = 500


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _local_pretix(n: int) -> tuple[list[str], dict[str, object]]:
    key = ed25519.Ed25519PrivateKey.generate()
    texts = []
    for i in range(n):
        seed = base64.b64encode(os.urandom(7)).decode()[:9]
        payload = b"\x0a\x09" + seed.encode() + b"\x10\xc9\x01\x20" + bytes([0xC1, 0xB8, 0x02])
        payload += b"" if i % 2 else b"\x30\x80\xde\xe5\x8d\x0e"  # some with a valid-until
        raw = struct.pack(">BHH", 1, len(payload), 64) + payload + key.sign(payload)
        texts.append(base64.b64encode(raw).decode()[::-1])
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return texts, {"valid_keys": {"pretix_sig1": [base64.b64encode(pem).decode()]}}


def pretix_set() -> tuple[list[str], trust.TrustBundle, str]:
    if VECTORS.is_dir():
        cases = json.loads((VECTORS / "tickets.json").read_text())
        texts = [c["secret"] for c in cases if c["signature_valid"]]
        event = json.loads((VECTORS / "event.json").read_text())
        return texts, pretix_event.trust_bundle(event), "real secrets from the vectors"
    texts, event = _local_pretix(32)
    return texts, pretix_event.trust_bundle(event), "locally signed secrets (no vectors)"


def tk1_set(n: int) -> tuple[list[str], trust.TrustBundle]:
    key = ed25519.Ed25519PrivateKey.generate()
    texts = [
        tk1.sign(
            tk1.TK1Fields(
                kid=7,
                token_id=os.urandom(16),
                ticket_id=os.urandom(8),
                event_id=1,
                zones=1,
                not_before=0,
                not_after=4_000_000_000,
            ),
            key,
        )
        for _ in range(n)
    ]
    issuer = trust.IssuerKey(
        kid="7",
        alg="ed25519",
        public_key=key.public_key(),
        formats=frozenset({"tk1"}),
        events=None,
        valid_from=None,
        valid_until=None,
        status="active",
    )
    return texts, trust.TrustBundle(1, 0, (issuer,), (), b"")


def timed(fn: Callable[..., object], *args: object) -> float:
    """Microseconds one call of ``fn(*args)`` takes."""
    t = time.perf_counter_ns()
    fn(*args)
    return (time.perf_counter_ns() - t) / 1e3


def parse_verify(text: str, bundle: trust.TrustBundle, now: float) -> trust.SignatureCheck:
    return trust.verify(tickets.parse(text), bundle, now)


def run(rounds: int) -> tuple[dict[str, dict[str, list[float]]], str]:
    p_texts, p_bundle, source = pretix_set()
    t_texts, t_bundle = tk1_set(len(p_texts))
    formats = {"pretix_sig1": (p_texts, p_bundle), "tk1": (t_texts, t_bundle)}
    out: dict[str, dict[str, list[float]]] = {
        name: {"parse": [], "verify": [], "parse+verify": []} for name in formats
    }
    now = time.time()
    for i in range(rounds + WARMUP):
        for name, (texts, bundle) in formats.items():
            text = texts[i % len(texts)]
            ticket = tickets.parse(text)
            parse_us = timed(tickets.parse, text)
            verify_us = timed(trust.verify, ticket, bundle, now)
            both_us = timed(parse_verify, text, bundle, now)
            assert trust.verify(ticket, bundle, now).ok
            if i >= WARMUP:
                out[name]["parse"].append(parse_us)
                out[name]["verify"].append(verify_us)
                out[name]["parse+verify"].append(both_us)
    return out, source


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20_000)
    args = ap.parse_args()
    results, source = run(args.rounds)
    print(f"pretix_sig1 vs TK1, {args.rounds:,} rounds each, interleaved; pretix: {source}")
    print(f"{'format':<13}{'step':<14}{'p50 us':>10}{'p99 us':>10}")
    summary: dict[str, float] = {}
    for name, steps in results.items():
        for step, values in steps.items():
            p50, p99 = statistics.median(values), pct(values, 0.99)
            print(f"{name:<13}{step:<14}{p50:>10.1f}{p99:>10.1f}")
            summary[f"{name}_{step}_p50_us"] = round(p50, 1)
            summary[f"{name}_{step}_p99_us"] = round(p99, 1)
    ratio = summary["pretix_sig1_parse+verify_p50_us"] / summary["tk1_parse+verify_p50_us"]
    print(f"ratio pretix_sig1 / tk1 (parse+verify p50): {ratio:.2f}")
    print(
        json.dumps({"bench": "pretix", "rounds": args.rounds, **summary, "ratio": round(ratio, 2)})
    )


if __name__ == "__main__":
    main()
