"""Benchmark: a camera reading rotating tickets (TK2 codes: 292 characters, QR version 10-M).

Generated camera-like footage (drivers/camera_synth.py: textured background, uneven light; each
code held up for 40 frames moving, tilted, blurred, under glare, dim and noisy, or inverted, with a
jerk of the hand mid-way), each presentation a fresh code of one holder's device. Counted in the
same run on the same frames:

* bare zxing-cpp: ``zxingcpp.read_barcodes(frame)`` with its defaults on every frame;
* the project: the frames through the camera pipeline (CameraScanner over a MemorySource, the
  default engine and settings a gate runs with): the scans it hands to the lane.

Per style: presentations read (at least one frame decoded to the exact code), and frames read
out of those showing a code. Module size 3 and 4 px at 640x480 and 6 px at 1280x720 (a phone
held 20-30 cm from a 720p camera shows modules of 5-8 px; 3 px is a phone held far off).

    .venv/bin/python tests/bench/bench_rotating_camera.py [--per-style 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import zxingcpp  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from agent import issuer  # noqa: E402
from agent.tickets import tk2  # noqa: E402
from drivers import camera_synth as synth  # noqa: E402
from drivers.camera import CameraScanner  # noqa: E402
from drivers.camera_sources import MemorySource  # noqa: E402

SHOW, GAP = 40, 20
SIZES = ((640, 480, 3), (640, 480, 4), (1280, 720, 6))


def codes(count: int) -> list[str]:
    """``count`` codes of one rotating ticket, one per presentation, 5 s apart."""
    with tempfile.TemporaryDirectory() as tmp:
        issuer.keys_init(Path(tmp) / "keys", events=[1])
        signer = issuer.Issuer.load(Path(tmp) / "keys")
    device = ec.generate_private_key(ec.SECP256R1())
    static = signer.rotating_ticket(tk2.compressed(device.public_key()), event=1)
    now = int(time.time())
    return [tk2.make_code(static, device, now + 5 * i) for i in range(count)]


def bare(frames: list[synth.Gray]) -> tuple[set[str], int]:
    """Texts zxing-cpp reads with its defaults, and the number of frames it read a code in."""
    texts: set[str] = set()
    frames_read = 0
    for frame in frames:
        found = [c.text for c in zxingcpp.read_barcodes(frame)]
        texts.update(found)
        frames_read += bool(found)
    return texts, frames_read


async def project(frames: list[synth.Gray]) -> set[str]:
    """Texts the camera pipeline hands to the lane for these frames."""
    scanner = CameraScanner(MemorySource(frames, fps=0))
    await scanner.open()
    texts = {scan.text async for scan in scanner.scans()}
    await scanner.close()
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-style", type=int, default=10, help="presentations per style and size")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    print(f"{'frame/module':<16} {'style':<9} {'shown':>5} {'bare zxing':>10} {'project':>8} "
          f"{'frames read (bare)':>19}")  # fmt: skip
    for width, height, module in SIZES:
        for n, style in enumerate(synth.STYLES):
            texts = codes(args.per_style)
            shown = [synth.Presentation(t, style, SHOW) for t in texts]
            frames = synth.scene(shown, width=width, height=height, gap_frames=GAP,
                                 seed=n + width, module_px=module)  # fmt: skip
            read_bare, frames_read = bare(frames)
            read_project = asyncio.run(project(frames))
            wanted = set(texts)
            row = {
                "size": f"{width}x{height}", "module_px": module, "style": style,
                "shown": len(texts), "bare": len(read_bare & wanted),
                "project": len(read_project & wanted),
                "misreads_bare": len(read_bare - wanted),
                "misreads_project": len(read_project - wanted),
                "frames_with_code": len(texts) * SHOW, "frames_read_bare": frames_read,
            }  # fmt: skip
            results.append(row)
            label = f"{width}x{height}/{module}px"
            print(f"{label:<16} {style:<9} {row['shown']:>5} {row['bare']:>10} "
                  f"{row['project']:>8} {frames_read:>10}/{row['frames_with_code']}")  # fmt: skip
    total = {k: sum(int(r[k]) for r in results) for k in ("shown", "bare", "project")}
    print(f"all: {total['shown']} shown, bare zxing-cpp read {total['bare']}, "
          f"the project {total['project']}")  # fmt: skip
    print(json.dumps({"bench": "rotating_camera", "total": total, "rows": results}))


if __name__ == "__main__":
    main()
