"""Decoder engines and the camera pipeline, on one core.

1. Real photos and scans (tests/vectors/barcodes/): per folder and engine, codes read
   correctly / total, misreads (something decoded, not the expected text), median and p99 ms.
2. Generated 640x480 and 1280x720 frames, empty and with a ticket: ms per frame per engine.
3. The camera pipeline's overhead over the bare decoder on the same frames (goal <= 1.2x):
   in-memory gray frames through CameraScanner (hand-over, decode thread, presentations, scan
   queue) against decoder.decode() in a plain loop; and the same frames from an MJPG AVI via
   file:// (adds the JPEG decode a USB camera's MJPG stream needs).
4. Real time: a 10 s 1280x720 MJPG video played through file:// at 30 fps with the default
   engine; CPU time (time.process_time) over wall time, frames dropped, tickets read.

Run pinned to one CPU with OpenCV/OpenMP threads = 1:

    .venv/bin/python tests/bench/bench_decoders.py [--vectors DIR] [--seconds 10] [--frames 200]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    os.environ[_var] = "1"
os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "threads;1"

import argparse  # noqa: E402
import asyncio  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agent.tickets import base45  # noqa: E402
from drivers import camera_synth as synth  # noqa: E402
from drivers.camera import CameraScanner  # noqa: E402
from drivers.camera_sources import MemorySource  # noqa: E402
from drivers.decoders import Decoder, make_decoder  # noqa: E402

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "barcodes"
FOLDER_FORMATS = {
    "qrcode": "qr",
    "aztec": "aztec",
    "pdf417": "pdf417",
    "datamatrix": "datamatrix",
    "code128": "code128",
}
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")
ENGINES = ("zxing", "pyzbar")
rows: list[str] = []


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ticket_text() -> str:
    """A TK1-shaped text: 'TK1:' + base45 of 108 random bytes (166 chars, QR version 7-M)."""
    return "TK1:" + base45.encode(secrets.token_bytes(108))


def row(*cells: object) -> None:
    rows.append("| " + " | ".join(str(c) for c in cells) + " |")


def samples(folder: Path) -> list[tuple[Path, str | None, bytes | None]]:
    out: list[tuple[Path, str | None, bytes | None]] = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        txt, binary = image.with_suffix(".txt"), image.with_suffix(".bin")
        if txt.exists():
            out.append((image, txt.read_bytes().decode("utf-8"), None))  # CR LF kept as is
        elif binary.exists():
            out.append((image, None, binary.read_bytes()))
    return out


def bench_vectors(root: Path) -> None:
    print(f"\n## Real samples ({root})")
    header = "| engine | folder | read correctly | misreads | median ms | p99 ms |"
    rows.extend(["", header, "|---|---|---|---|---|---|"])
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        fmt = FOLDER_FORMATS[folder.name.rsplit("-", 1)[0]]
        items = samples(folder)
        for engine in ENGINES:
            if engine == "pyzbar" and fmt not in ("qr", "code128"):
                row(engine, folder.name, f"n/a (no {fmt})", "", "", "")
                continue
            decoder = make_decoder(engine, [fmt])
            good = bad = 0
            times = []
            for path, text, raw in items:
                gray = np.asarray(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), dtype=np.uint8)
                t0 = time.perf_counter()
                found = decoder.decode(gray)
                times.append((time.perf_counter() - t0) * 1e3)
                hit = any(c.text == text if text is not None else c.raw == raw for c in found)
                good += hit
                bad += bool(found) and not hit
            med, p99 = statistics.median(times), pct(times, 0.99)
            print(
                f"{engine:7} {folder.name:13} {good:3}/{len(items):3} misreads {bad}  {med:.2f} ms"
            )
            row(engine, folder.name, f"{good}/{len(items)}", bad, f"{med:.2f}", f"{p99:.2f}")


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_generated(n: int) -> None:
    print("\n## Generated frames (ms per frame)")
    rows.extend(["", "| engine | frame | median ms | p99 ms | read |", "|---|---|---|---|---|"])
    text = ticket_text()
    for width, height, module in ((640, 480, 4), (1280, 720, 6)):
        empty = synth.background(width, height, np.random.default_rng(3))
        ticket = synth.still(text, width=width, height=height, module_px=module)
        for engine in ENGINES:
            decoder = make_decoder(engine)
            runs = n if engine == "zxing" else max(20, n // 5)
            for label, frame in (("empty", empty), ("ticket", ticket)):
                read = any(c.text == text for c in decoder.decode(frame))
                times = timed(lambda f=frame, d=decoder: d.decode(f), runs)  # type: ignore[misc]
                med, p99 = statistics.median(times), pct(times, 0.99)
                name = f"{width}x{height} {label}"
                print(f"{engine:7} {name:18} median {med:7.2f} ms  p99 {p99:7.2f} ms  read={read}")
                row(engine, name, f"{med:.2f}", f"{p99:.2f}", "yes" if read else "no")


async def run_scanner(scanner: CameraScanner) -> tuple[int, float, float]:
    """Open, drain the scans until the source ends; (scans, wall s, CPU s)."""
    c0, t0 = time.process_time(), time.perf_counter()
    await scanner.open()
    count = 0
    async for _ in scanner.scans():
        count += 1
    await scanner.close()
    return count, time.perf_counter() - t0, time.process_time() - c0


def demo_frames(
    width: int, height: int, seconds: float, show: int = 40, gap: int = 30
) -> tuple[list[str], list[np.ndarray]]:
    """``seconds`` at 30 fps: an empty stretch, then tickets of each style, each shown for
    ``show`` frames and followed by ``gap`` empty frames; padded with empty frames."""
    per = int(seconds * 30)
    count = max(1, (per - gap) // (show + gap))
    texts = [ticket_text() for _ in range(count)]
    styles = [synth.STYLES[i % len(synth.STYLES)] for i in range(count)]
    pres = [synth.Presentation(t, s, show) for t, s in zip(texts, styles, strict=True)]
    frames = synth.scene(pres, width=width, height=height, gap_frames=gap, module_px=6)
    return texts, frames + [frames[0]] * max(0, per - len(frames))


ROUNDS = 3


def per_frame(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Median over ROUNDS runs of ``fn`` (after one warm-up): (wall ms, CPU ms) per frame."""
    fn()
    walls, cpus = [], []
    for _ in range(ROUNDS):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - t0) / n * 1e3)
        cpus.append((time.process_time() - c0) / n * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def avi_packets(path: Path) -> list[np.ndarray]:
    """The JPEG frames of an MJPG AVI, as stored (what file:// hands to the decode thread)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    cap.set(cv2.CAP_PROP_FORMAT, -1)
    packets = []
    while True:
        ok, data = cap.read()
        if not ok:
            break
        packets.append(np.asarray(data, dtype=np.uint8).reshape(-1))
    cap.release()
    return packets


def bench_overhead(tmp: Path) -> None:
    print("\n## Pipeline overhead over the bare decoder (1280x720, zxing)")
    texts, frames = demo_frames(1280, 720, 8)
    n = len(frames)
    video = synth.write_video(tmp / "overhead.avi", frames)
    jpegs = avi_packets(video)
    assert len(jpegs) == n
    decoder: Decoder = make_decoder("zxing")
    found: dict[str, int] = {}

    def scanner_run(make: Callable[[], CameraScanner], key: str) -> Callable[[], None]:
        def run() -> None:
            found[key] = asyncio.run(run_scanner(make()))[0]

        return run

    def bare_jpeg() -> None:
        for j in jpegs:
            decoder.decode(np.asarray(cv2.imdecode(j, cv2.IMREAD_GRAYSCALE), dtype=np.uint8))

    bare = per_frame(lambda: [decoder.decode(f) for f in frames], n)
    mem = per_frame(scanner_run(lambda: CameraScanner(MemorySource(frames, fps=0)), "mem"), n)
    bare_j = per_frame(bare_jpeg, n)
    vid = per_frame(scanner_run(lambda: CameraScanner.from_url(f"file://{video}?fps=0"), "vid"), n)
    rows.extend(["", "| path | ms/frame wall | ms/frame CPU | x its bare loop | tickets read |"])
    rows.append("|---|---|---|---|---|")
    row("bare: decoder.decode(gray)", f"{bare[0]:.2f}", f"{bare[1]:.2f}", "1.00", "")
    row(
        "pipeline: in-memory gray frames",
        f"{mem[0]:.2f}",
        f"{mem[1]:.2f}",
        f"{mem[0] / bare[0]:.2f}",
        f"{found['mem']}/{len(texts)}",
    )
    row("bare: imdecode(JPEG, gray) + decode", f"{bare_j[0]:.2f}", f"{bare_j[1]:.2f}", "1.00", "")
    row(
        "pipeline: file:// MJPG AVI",
        f"{vid[0]:.2f}",
        f"{vid[1]:.2f}",
        f"{vid[0] / bare_j[0]:.2f}",
        f"{found['vid']}/{len(texts)}",
    )
    print(
        f"{n} frames. gray: bare {bare[0]:.2f} ms/frame, pipeline {mem[0]:.2f} "
        f"({mem[0] / bare[0]:.2f}x, goal <= 1.2x). MJPG: bare JPEG+decode {bare_j[0]:.2f}, "
        f"file:// {vid[0]:.2f} ({vid[0] / bare_j[0]:.2f}x)"
    )


def bench_realtime(tmp: Path, seconds: float) -> None:
    print(f"\n## Real time: {seconds:.0f} s of 1280x720 MJPG at 30 fps through file://, zxing")
    texts, frames = demo_frames(1280, 720, seconds)
    video = synth.write_video(tmp / "realtime.avi", frames)
    scanner = CameraScanner.from_url(f"file://{video}?fps=30")
    n, wall, cpu = asyncio.run(run_scanner(scanner))
    share = cpu / wall
    keeps_up = scanner.frames_dropped == 0 and n == len(texts)
    print(
        f"{len(frames)} frames in {wall:.2f} s wall, CPU {cpu:.2f} s = {share:.2f} core; dropped "
        f"{scanner.frames_dropped}; tickets {n}/{len(texts)}; keeps up: {keeps_up}"
    )
    rows.extend(
        ["", "| frames | wall s | CPU s | cores used | dropped | tickets read | keeps up |"]
    )
    rows.append("|---|---|---|---|---|---|---|")
    row(
        len(frames),
        f"{wall:.2f}",
        f"{cpu:.2f}",
        f"{share:.3f}",
        scanner.frames_dropped,
        f"{n}/{len(texts)}",
        keeps_up,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors", type=Path, default=VECTORS)
    parser.add_argument("--frames", type=int, default=200, help="timed runs per generated frame")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the real-time run")
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)
    print(f"pinned to CPU {cpu}; cv2 {cv2.__version__}, threads {cv2.getNumThreads()}")
    if args.vectors.is_dir():
        bench_vectors(args.vectors)
    else:
        print(f"no vectors at {args.vectors}; skipped")
    bench_generated(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        bench_overhead(Path(tmp))
        bench_realtime(Path(tmp), args.seconds)
    print("\n## Markdown")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
