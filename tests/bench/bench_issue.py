"""Benchmark: issuing at scale, as `gate-agent issue --count N` does it (text and QR image).

Run as a script (not collected by pytest)::

    .venv/bin/python tests/bench/bench_issue.py [--count 100000] [--alg ed25519|p256]

Issues ``--count`` tickets through the command line into a fresh folder (ticket-NNNNNN.txt and
.png each) and reports the wall time, tickets per second, the bytes written, and, measured in the
same run on a sample, the per-ticket cost of its parts: signing alone (the floor no issuer can go
below), the QR image alone, and the files. It prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent import issuer, ticket_files  # noqa: E402  (the path above makes the checkout importable)

SAMPLE = 2000


def _per_ticket_us(count: int, job: object) -> float:
    assert callable(job)
    start = time.perf_counter()
    for _ in range(count):
        job()
    return (time.perf_counter() - start) / count * 1e6


def parts(keys_dir: Path) -> dict[str, float]:
    """Per-ticket microseconds of signing alone and of the QR image alone, on a sample."""
    iss = issuer.TicketSigner.load(keys_dir)
    text = iss.ticket(event=1)
    sign_us = _per_ticket_us(SAMPLE, lambda: iss.ticket(event=1))
    qr_us = _per_ticket_us(SAMPLE, lambda: ticket_files.qr_png(text))
    return {"sign_us": sign_us, "qr_png_us": qr_us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--alg", choices=("ed25519", "p256"), default="ed25519")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys_dir = root / "keys"
        issuer.keys_init(keys_dir, alg=args.alg, kid=1, events=[1])
        floor = parts(keys_dir)
        out = root / "tickets"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "agent", "issue", "--keys", str(keys_dir), "--event", "1",
             "--count", str(args.count), "--out", str(out)],
            check=True, cwd=REPO, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        files = list(out.iterdir())
        size = sum(f.stat().st_size for f in files)
    assert len(files) == 2 * args.count, f"{len(files)} files for {args.count} tickets"
    result = {
        "count": args.count,
        "alg": args.alg,
        "wall_s": round(wall, 1),
        "tickets_per_s": round(args.count / wall),
        "per_ticket_us": round(wall / args.count * 1e6),
        "sign_us": round(floor["sign_us"], 1),
        "qr_png_us": round(floor["qr_png_us"], 1),
        "ratio_to_sign_and_qr": round(
            wall / args.count * 1e6 / (floor["sign_us"] + floor["qr_png_us"]), 2
        ),
        "bytes_written": size,
    }
    print(f"issued {args.count:,} {args.alg} tickets (text + QR PNG) in {wall:.1f} s:")
    print(f"  {result['tickets_per_s']:,} tickets/s, {result['per_ticket_us']} us per ticket")
    print(f"  parts (same run): sign {result['sign_us']} us, QR PNG {result['qr_png_us']} us;")
    print(f"  ratio to sign + QR: {result['ratio_to_sign_and_qr']}x")
    print(f"  {size / 1e6:.1f} MB written")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
