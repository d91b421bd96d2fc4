"""Camera scanner: URLs, frame layouts, presentations, and generated video and images played
through file:// (no camera needed), the lane on top, a camera lost and found again."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.errors import DriverError
from agent.issuer import Issuer
from agent.model import Reason
from agent.ports import Scan, Scanner
from agent.redact import text_digest
from agent.tickets import base45
from drivers import camera_synth as synth
from drivers.camera import CameraScanner
from drivers.camera_frames import RawFrame, Roi, fourcc_text, prepare
from drivers.camera_pipeline import LatestSlot, Presentations
from drivers.camera_sources import (
    MAX_IMAGE_BYTES,
    ImageFilesSource,
    MemorySource,
    V4L2Source,
    VideoFileSource,
)
from drivers.decoders import Decoded, ZxingDecoder
from drivers.sim import SimGate
from tests.conftest import WriteConfig
from tests.polling import until


def ticket_text() -> str:
    return "TK1:" + base45.encode(secrets.token_bytes(108))


async def collect(scanner: CameraScanner, limit_s: float = 30.0) -> list[Scan]:
    """Open, gather every scan until the stream ends, close."""
    await scanner.open()
    try:

        async def drain() -> list[Scan]:
            return [scan async for scan in scanner.scans()]

        return await asyncio.wait_for(drain(), limit_s)
    finally:
        await scanner.close()


class RecordingDecoder:
    """zxing, slowed down on purpose, remembering the thread and the shapes it was given."""

    engine = "zxing"
    formats = ("qr",)

    def __init__(self, delay_s: float = 0.0) -> None:
        self.inner, self.delay_s = ZxingDecoder(), delay_s
        self.threads: set[int] = set()
        self.shapes: list[tuple[int, ...]] = []

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        self.threads.add(threading.get_ident())
        self.shapes.append(gray.shape)
        time.sleep(self.delay_s)  # the scenario: a long decode; the GIL is released as in zxing
        return self.inner.decode(gray)


# -- URLs --------------------------------------------------------------------------------------


def test_camera_url_sets_every_parameter() -> None:
    scanner = CameraScanner.from_url(
        "camera:///dev/v4l/by-id/usb-cam-index0?width=1280&height=720&fps=30&fourcc=MJPG"
        "&engine=pyzbar&formats=qr,code128&roi=10,20,300,200&downscale=2&hold_ms=900&rotate=0"
        "&retry_max_s=2.5&source=lane1-cam"
    )
    source = scanner.source
    assert isinstance(source, V4L2Source) and source.live
    assert (source.path, source.width, source.height, source.fps, source.fourcc) == (
        Path("/dev/v4l/by-id/usb-cam-index0"),
        1280,
        720,
        30.0,
        "MJPG",
    )
    assert (scanner.engine, scanner.formats, scanner.try_rotate) == (
        "pyzbar",
        ("qr", "code128"),
        False,
    )
    assert (scanner.roi, scanner.downscale, scanner.hold_ms) == (Roi(10, 20, 300, 200), 2, 900)
    assert (scanner.retry_max_s, scanner.source_name) == (2.5, "lane1-cam")
    assert isinstance(scanner, Scanner)


def test_file_urls_relative_and_absolute(tmp_path: Path) -> None:
    folder = CameraScanner.from_url("file://frames/?fps=0&loop=1", tmp_path)
    assert isinstance(folder.source, ImageFilesSource)
    assert folder.source.path == tmp_path / "frames" and folder.source.loop
    assert folder.source.pace_s == 0 and folder.source_name == "file:frames"
    video = CameraScanner.from_url("file:///srv/demo/tickets.avi?fps=15")
    assert isinstance(video.source, VideoFileSource)
    assert video.source.path == Path("/srv/demo/tickets.avi") and video.source.pace_s == 1 / 15
    assert (video.engine, video.formats, video.hold_ms, video.downscale) == (
        "zxing",
        ("qr",),
        1500,
        1,
    )


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("camera:///dev/video0?widht=640", "widht"),
        ("camera:///dev/video0?width=abc", "width"),
        ("camera:///dev/video0?width=0", "width"),
        ("camera:///dev/video0?width=-5", "width"),
        ("camera:///dev/video0?width=640&width=320", "width"),
        ("camera:///dev/video0?fps=0", "fps"),
        ("camera:///dev/video0?fps=nan", "fps"),
        ("camera:///dev/video0?fourcc=MJPEG", "fourcc"),
        ("camera:///dev/video0?engine=zbar", "engine"),
        ("camera:///dev/video0?formats=qr,ean13", "ean13"),
        ("camera:///dev/video0?engine=pyzbar&formats=aztec", "aztec"),
        ("camera:///dev/video0?formats=", "formats"),
        ("camera:///dev/video0?roi=1,2,3", "roi"),
        ("camera:///dev/video0?roi=0,0,0,10", "roi"),
        ("camera:///dev/video0?roi=a,b,c,d", "roi"),
        ("camera:///dev/video0?downscale=9", "downscale"),
        ("camera:///dev/video0?downscale=0", "downscale"),
        ("camera:///dev/video0?hold_ms=1.5", "hold_ms"),
        ("camera:///dev/video0?rotate=yes", "rotate"),
        ("camera:///dev/video0?retry_max_s=0", "retry_max_s"),
        ("camera:///dev/video0?source=", "source"),
        ("camera:///dev/video0?loop=1", "loop"),
        ("camera:///dev/video0?novalue", "malformed"),
        ("camera:///dev/video0#frag", "fragment"),
        ("camera://video0", "absolute"),
        ("file:///x.avi?width=640", "width"),
        ("file:///x.avi?fps=-1", "fps"),
        ("file:///x.avi?loop=2", "loop"),
        ("file://", "path"),
        ("sim://queue", "camera://"),
    ],
)
def test_bad_urls_name_the_parameter(url: str, named: str) -> None:
    with pytest.raises(DriverError, match=named):
        CameraScanner.from_url(url)


# -- frames ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return synth.still(ticket_text(), width=640, height=480)


def _frame(data: np.ndarray, layout: str) -> RawFrame:
    return RawFrame(data, layout, 0, 0, 1)  # type: ignore[arg-type]


def test_gray_plane_is_taken_from_every_layout(gray: np.ndarray) -> None:
    chroma = np.full_like(gray, 128)
    h, w = gray.shape
    layouts = {
        "gray": gray,
        "yuyv": np.stack([gray, chroma], axis=-1),
        "uyvy": np.stack([chroma, gray], axis=-1),
        "yuv420": np.vstack([gray, np.full((h // 2, w), 128, np.uint8)]),
        "bgr": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
        "rgb": cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB),
        "encoded": cv2.imencode(".png", gray)[1],
    }
    packed = np.stack([gray, chroma], axis=-1).reshape(h, w * 2)  # YUYV as plain rows of bytes
    for layout, data in [*layouts.items(), ("yuyv", packed)]:
        out = prepare(_frame(data, layout))
        assert out is not None and np.array_equal(out, gray), layout
    jpeg = prepare(_frame(cv2.imencode(".jpg", gray)[1], "encoded"))
    assert jpeg is not None and jpeg.shape == gray.shape
    assert np.abs(jpeg.astype(int) - gray).mean() < 3


def test_roi_then_downscale(gray: np.ndarray) -> None:
    roi = Roi(100, 50, 320, 240)
    expected = cv2.resize(gray[50:290, 100:420], (160, 120), interpolation=cv2.INTER_AREA)
    out = prepare(_frame(gray, "gray"), roi, 2)
    assert out is not None and np.array_equal(out, expected)
    reduced = prepare(_frame(cv2.imencode(".png", gray)[1], "encoded"), roi, 2)
    assert reduced is not None and reduced.shape == (120, 160)
    assert np.abs(reduced.astype(int) - expected).mean() < 6
    clipped = prepare(_frame(gray, "gray"), Roi(600, 0, 200, 100))
    assert clipped is not None and clipped.shape == (100, 40)


def test_frames_that_carry_nothing_or_do_not_fit(gray: np.ndarray) -> None:
    assert prepare(_frame(np.frombuffer(b"\xff\xd8garbage", np.uint8), "encoded")) is None
    assert prepare(_frame(gray, "gray"), Roi(700, 500, 10, 10)) is None
    with pytest.raises(DriverError, match="yuyv"):
        prepare(_frame(np.zeros((48, 64, 3), np.uint8), "yuyv"))
    with pytest.raises(DriverError, match="yuv420"):
        prepare(_frame(np.zeros((49, 64), np.uint8), "yuv420"))
    with pytest.raises(DriverError, match="8-bit"):
        prepare(_frame(np.zeros((48, 64), np.uint16), "gray"))
    assert fourcc_text(cv2.VideoWriter.fourcc(*"MJPG")) == "MJPG"


# -- hand-over and presentations ---------------------------------------------------------------


def test_latest_slot_keeps_the_newest_and_counts_the_rest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for n in (1, 2, 3):
        assert slot.put(n)
    assert (slot.take(), slot.dropped) == (3, 2)
    assert slot.put(4)
    waiter = threading.Thread(target=slot.put, args=(5,), kwargs={"wait": True})
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()  # lossless mode waits for the slot to empty
    assert slot.take() == 4
    waiter.join(1)
    assert slot.take() == 5 and slot.dropped == 2
    slot.put(6)
    slot.close()
    assert (slot.take(), slot.take(), slot.put(7)) == (6, None, False)
    discarding: LatestSlot[int] = LatestSlot()
    discarding.put(1)
    discarding.close(discard=True)
    assert discarding.take() is None


def test_a_code_in_view_is_one_presentation() -> None:
    ms = 1_000_000
    seen = Presentations(hold_ns=1500 * ms)
    assert seen.seen(["A"], 0) == ["A"]
    assert seen.seen(["A", "A"], 33 * ms) == []
    assert seen.seen(["A", "B"], 1400 * ms) == ["B"]  # B is new; A still in view
    assert seen.seen(["A"], 2800 * ms) == []  # out of view 1.4 s, under the hold
    assert seen.seen(["A"], 4301 * ms) == ["A"]  # out of view 1.501 s: presented again
    for n in range(200):
        seen.seen([f"T{n}"], (5000 + n * 2000) * ms)
    assert len(seen) <= Presentations.PRUNE_AT + 1


# -- end to end through file:// ----------------------------------------------------------------


async def test_video_with_every_kind_of_presentation_reads_each_ticket_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [ticket_text() for _ in synth.STYLES]
    presented = [synth.Presentation(t, s, 30) for t, s in zip(texts, synth.STYLES, strict=True)]
    frames = synth.scene(presented, gap_frames=60)  # 2 s gaps at 30 fps, hold is 1.5 s
    video = synth.write_video(tmp_path / "tickets.avi", frames)
    scanner = CameraScanner.from_url(f"file://{video}?fps=0")
    with caplog.at_level(logging.DEBUG):
        scans = await collect(scanner)
    assert [s.text for s in scans] == texts
    assert {(s.source, s.symbology) for s in scans} == {("file:tickets.avi", "qr")}
    assert scanner.frames_read == scanner.frames_decoded == len(frames)
    assert scanner.frames_dropped == 0 and scanner.decode_errors == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert text_digest(texts[0]) in logged
    assert not any(t in logged for t in texts)


async def test_video_plays_at_its_own_rate_by_default(tmp_path: Path) -> None:
    video = synth.write_video(tmp_path / "v.avi", synth.scene([], gap_frames=20), fps=50)
    scanner = CameraScanner.from_url(f"file://{video}")
    started = time.monotonic()
    assert await collect(scanner) == []
    assert scanner.source.pace_s == pytest.approx(1 / 50)
    assert 19 / 50 <= time.monotonic() - started < 3
    assert scanner.frames_decoded == 20 and scanner.frames_dropped == 0


async def test_empty_footage_produces_no_scan(tmp_path: Path) -> None:
    empty = synth.scene([], gap_frames=90)
    scanner = CameraScanner.from_url(f"file://{synth.write_video(tmp_path / 'e.avi', empty)}?fps=0")
    assert await collect(scanner) == []
    assert scanner.frames_decoded == 90


async def test_lane_decides_each_ticket_once(
    tmp_path: Path, write_config: WriteConfig, iss: Issuer
) -> None:
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(4)]
    styles: tuple[synth.Style, ...] = ("moving", "tilted", "glare", "blurred")
    presented = [synth.Presentation(t, s, 24) for t, s in zip(texts, styles, strict=True)]
    video = synth.write_video(tmp_path / "gate.avi", synth.scene(presented, gap_frames=50))
    camera = CameraScanner.from_url(f"file://{video}?fps=0")
    conf = config.load(write_config(repeat_window_ms=0))  # only the camera's hold de-duplicates
    async with open_gate(conf, scanner=camera) as gate:
        await asyncio.wait_for(gate.lane.run(), 60)
        rows = await gate.journal.tail(50)
        sim = gate.lane.gate
        assert isinstance(sim, SimGate) and len(sim.pulses) == 4
    assert [(r.kind, r.reason) for r in rows] == [("entry", Reason.OK.value)] * 4


@pytest.mark.parametrize("engine", ["zxing", "pyzbar"])
async def test_both_engines_through_a_folder_of_images(tmp_path: Path, engine: str) -> None:
    texts = [ticket_text() for _ in range(3)]
    styles: tuple[synth.Style, ...] = ("moving", "blurred", "glare")
    presented = [synth.Presentation(t, s, 8) for t, s in zip(texts, styles, strict=True)]
    synth.write_images(tmp_path / "frames", synth.scene(presented, gap_frames=20))
    url = f"file://frames/?fps=0&hold_ms=300&engine={engine}"  # 20 frames = 667 ms > 300 ms
    scans = await collect(CameraScanner.from_url(url, tmp_path))
    assert [s.text for s in scans] == texts


async def test_still_image_reads_once_and_ends(tmp_path: Path, gray: np.ndarray) -> None:
    text = ticket_text()
    cv2.imwrite(str(tmp_path / "one.png"), synth.still(text))
    assert [
        s.text for s in await collect(CameraScanner.from_url(f"file://{tmp_path}/one.png"))
    ] == [text]
    looping = CameraScanner.from_url(f"file://{tmp_path}/one.png?loop=1&fps=60")
    await looping.open()
    first = await asyncio.wait_for(anext(looping.scans()), 5)
    seen = looping.frames_read
    await until(lambda: looping.frames_read >= seen + 30, 5, "30 more frames of the same code")
    await looping.close()
    rest = [s async for s in looping.scans()]
    assert first.text == text and rest == [] and looping.frames_read >= 20


async def test_looping_video_presents_its_ticket_once_per_pass(tmp_path: Path) -> None:
    text = ticket_text()
    video = synth.write_video(tmp_path / "loop.avi", synth.scene([synth.Presentation(text)]))
    scanner = CameraScanner.from_url(f"file://{video}?loop=1&fps=0")
    await scanner.open()
    stream = scanner.scans()
    scans = [await asyncio.wait_for(anext(stream), 10) for _ in range(3)]
    await scanner.close()
    assert [s.text for s in scans] == [text] * 3  # 120 empty frames (4 s) between passes
    assert scanner.frames_read > 2 * 150


async def test_shown_again_after_the_hold_is_a_new_presentation(gray: np.ndarray) -> None:
    text = ticket_text()
    code, empty = synth.still(text), synth.background(640, 480, np.random.default_rng(2))
    # 30 fps media clock: away 20 frames (0.67 s), then 60 frames (2 s).
    frames = [code] * 10 + [empty] * 20 + [code] * 10 + [empty] * 60 + [code] * 10
    held = await collect(CameraScanner(MemorySource(frames), hold_ms=1500))
    short = await collect(CameraScanner(MemorySource(frames), hold_ms=500))
    assert [s.text for s in held] == [text, text]
    assert [s.text for s in short] == [text, text, text]


async def test_roi_decodes_only_its_region() -> None:
    left, right = ticket_text(), ticket_text()
    frame = synth.background(1280, 720, np.random.default_rng(4))
    frame = synth.place(frame, synth.code_image(left), (320, 360))
    frame = synth.place(frame, synth.code_image(right), (960, 360))
    both = await collect(CameraScanner(MemorySource([frame])))
    assert sorted(s.text for s in both) == sorted([left, right])
    only = await collect(CameraScanner(MemorySource([frame]), roi=Roi(640, 0, 640, 720)))
    assert [s.text for s in only] == [right]
    with pytest.raises(DriverError, match="outside"):
        await CameraScanner(MemorySource([frame]), roi=Roi(1200, 0, 200, 100)).open()


async def test_downscale_shrinks_what_the_decoder_sees(tmp_path: Path) -> None:
    text = ticket_text()
    big = synth.still(text, width=1280, height=720, module_px=8)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    for source in (MemorySource([big]), ImageFilesSource(tmp_path / "big.png")):
        decoder = RecordingDecoder()
        scans = await collect(CameraScanner(source, downscale=2, decoder=decoder))
        assert [s.text for s in scans] == [text]
        assert decoder.shapes == [(360, 640)]


async def test_the_loop_keeps_ticking_while_frames_decode() -> None:
    decoder = RecordingDecoder(delay_s=0.08)
    frames = [synth.still(ticket_text())] + [
        synth.background(640, 480, np.random.default_rng(5))
    ] * 7
    scanner = CameraScanner(MemorySource(frames), decoder=decoder)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)  # the scenario: a 5 ms tick whose lateness is measured
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    scans = await collect(scanner)
    elapsed = time.monotonic() - started
    ticker.cancel()
    assert len(scans) == 1 and elapsed >= 8 * 0.08
    assert threading.get_ident() not in decoder.threads and len(decoder.threads) == 1
    assert max(gaps) < 0.05, max(gaps)


async def test_a_slow_decoder_drops_old_frames_not_new_ones() -> None:
    frames = [synth.background(320, 240, np.random.default_rng(n)) for n in range(40)]
    decoder = RecordingDecoder(delay_s=0.04)
    scanner = CameraScanner(MemorySource(frames, fps=100), decoder=decoder)
    assert await collect(scanner) == []
    assert scanner.frames_read == 40 and scanner.frames_dropped > 10
    assert scanner.frames_decoded + scanner.frames_dropped == 40


class FlakyCamera:
    """A live source that is unplugged after its first frames and comes back after some tries."""

    live, pace_s, name = True, 0.0, "flaky"

    def __init__(self, before: np.ndarray, after: np.ndarray, failed_opens: int) -> None:
        self.before, self.after, self.failed_opens = before, after, failed_opens
        self.opens: list[float] = []
        self.reads = 0
        self.unplugged = False

    def open(self) -> tuple[int, int] | None:
        self.opens.append(time.monotonic())
        if self.unplugged and len(self.opens) <= self.failed_opens + 1:
            raise DriverError("camera flaky: no such device")
        return 640, 480

    def read(self) -> RawFrame | None:
        time.sleep(0.005)  # the scenario: a camera paces itself
        self.reads += 1
        if not self.unplugged and self.reads > 10:
            self.unplugged = True
            raise DriverError("camera flaky: read failed (unplugged?)")
        now = time.monotonic_ns()
        return RawFrame(self.after if self.unplugged else self.before, "gray", now, now, self.reads)

    def close(self) -> None:
        return None


async def test_lost_camera_is_reported_once_and_reopened_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = ticket_text(), ticket_text()
    camera = FlakyCamera(synth.still(first), synth.still(second), failed_opens=4)
    scanner = CameraScanner(camera, retry_max_s=0.25)
    states: list[bool] = []
    with caplog.at_level(logging.INFO, logger="drivers.camera"):
        await scanner.open()
        scans = scanner.scans()
        assert (await asyncio.wait_for(anext(scans), 5)).text == first

        def reconnected() -> bool:
            states.append(scanner.connected)  # sampled while it is away
            return scanner.reconnects > 0

        await until(reconnected, 5, "the camera reconnected")
        assert (await asyncio.wait_for(anext(scans), 5)).text == second
        assert scanner.connected and scanner.reconnects == 1
        await scanner.close()
    assert False in states
    lost = [r for r in caplog.records if "camera lost" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert any("camera back" in r.getMessage() for r in caplog.records)
    waits = np.diff(camera.opens[1:])  # between reopen attempts: 0.2, then capped at 0.25
    assert len(waits) == 4
    for got, expected in zip(waits, (0.2, 0.25, 0.25, 0.25), strict=True):
        assert expected - 0.02 < got < expected + 0.15


async def test_device_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="no such device"):
        await CameraScanner.from_url(f"camera://{tmp_path}/video9").open()
    (tmp_path / "not-a-camera").write_text("x")
    with pytest.raises(DriverError, match="not a V4L2 device"):
        await CameraScanner.from_url(f"camera://{tmp_path}/not-a-camera").open()
    with pytest.raises(DriverError, match="no such file"):
        await CameraScanner.from_url(f"file://{tmp_path}/missing.avi").open()
    with pytest.raises(DriverError, match="no image files"):
        await CameraScanner.from_url(f"file://{tmp_path}/").open()


async def test_open_and_close_are_idempotent() -> None:
    scanner = CameraScanner(MemorySource([synth.still(ticket_text())], fps=30, loop=True))
    await scanner.close()  # closing before opening ends the stream
    assert [s async for s in scanner.scans()] == []
    await scanner.open()
    await scanner.open()
    names = [t.name for t in threading.enumerate() if t.name.endswith("file:memory")]
    assert sorted(names) == ["capture file:memory", "decode file:memory"]
    await scanner.close()
    await scanner.close()
    assert not [t for t in threading.enumerate() if t.name.endswith("file:memory")]
    assert not scanner.connected


@pytest.mark.hardware
@pytest.mark.skipif(not Path("/dev/video0").exists(), reason="no camera at /dev/video0")
async def test_real_camera_delivers_frames() -> None:
    scanner = CameraScanner.from_url("camera:///dev/video0?width=640&height=480")
    await scanner.open()
    await until(lambda: scanner.frames_read > 10, 5, "more than 10 frames from the camera")
    await scanner.close()
    assert scanner.frames_read > 10 and scanner.decode_errors == 0


def test_a_folder_source_skips_a_frame_gone_or_too_big_and_reads_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in a user trial: a frame deleted while the folder was read ended the lane (the
    frames after it, a ticket among them, never decided); a 1.5 GB file named .png was read
    whole before the pixel cap refused it."""
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), synth.background(64, 48, np.random.default_rng(1)))
    with (folder / "b.png").open("wb") as huge:  # sparse: no disk taken
        huge.truncate(MAX_IMAGE_BYTES + 1)
    cv2.imwrite(str(folder / "c.png"), synth.still(ticket_text()))
    source = ImageFilesSource(folder, fps=0)
    source.open()
    (folder / "a.png").unlink()  # after the folder was listed
    with caplog.at_level(logging.WARNING, "drivers.camera_sources"):
        frame = source.read()
        assert frame is not None and bytes(frame.data) == (folder / "c.png").read_bytes()
        assert source.read() is None
    said = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("a.png: gone before it was read: skipped") for m in said), said
    big = f"b.png: {MAX_IMAGE_BYTES + 1:,} bytes, more than an image of 50,000,000 pixels has"
    assert any(big in m for m in said), said


def test_a_looping_folder_plays_files_added_after_it_started_and_ends_when_emptied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in a user trial: a looping folder source (loop=1, a kiosk's demo frames) went on
    playing the files it held at the start, never one added later."""
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), synth.still(ticket_text()))
    source = ImageFilesSource(folder, fps=0, loop=True)
    source.open()

    def played() -> str:
        frame = source.read()
        assert frame is not None
        (name,) = [p.name for p in folder.iterdir() if p.read_bytes() == bytes(frame.data)]
        return name

    assert played() == "a.png"
    cv2.imwrite(str(folder / "b.png"), synth.still(ticket_text()))
    assert [played(), played(), played()] == ["a.png", "b.png", "a.png"]
    for path in folder.iterdir():
        path.unlink()
    with caplog.at_level(logging.WARNING, "drivers.camera_sources"):
        assert source.read() is None
    assert [r.getMessage() for r in caplog.records] == [
        f"file source {folder / 'b.png'}: gone before it was read: skipped",
        f"file source {folder}: no image files left: ended",
    ]


async def test_a_folder_played_with_fps_0_waits_for_the_lane_instead_of_dropping_reads(
    tmp_path: Path,
) -> None:
    """Found in a user trial: with fps=0 ("every frame") a folder of 40 tickets read faster
    than the lane took them lost every read past 32 waiting ("lane not keeping up")."""
    folder = tmp_path / "frames"
    folder.mkdir()
    texts = [ticket_text() for _ in range(40)]
    for i, text in enumerate(texts):
        cv2.imwrite(str(folder / f"{i:02d}.png"), synth.still(text))
    scanner = CameraScanner.from_url("file://frames/?fps=0", tmp_path)
    await scanner.open()
    try:
        # The lane takes nothing yet: the decoder stops once 32 reads wait for it.
        await until(lambda: scanner.frames_decoded > 32, 30, "33 frames decoded")
        got = [scan.text async for scan in scanner.scans()]
    finally:
        await scanner.close()
    assert got == texts


async def test_a_frame_with_more_codes_than_may_wait_is_read_not_hung(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: with fps=0 a frame of 40 codes (a photo of a sheet of tickets) waited for a
    33rd place in the lane's queue for ever: no read at all, and the lane never ended. It gives
    the 32 that may wait and says it dropped the rest."""
    folder = tmp_path / "frames"
    folder.mkdir()
    tiles = [np.pad(synth.code_image(f"code-{i:02d}", module_px=3), 10, constant_values=255)
             for i in range(40)]  # fmt: skip
    sheet = np.vstack([np.hstack(tiles[row * 8 : row * 8 + 8]) for row in range(5)])
    assert cv2.imwrite(str(folder / "sheet.png"), sheet)
    scanner = CameraScanner.from_url("file://frames/?fps=0", tmp_path)
    with caplog.at_level(logging.WARNING, "drivers.camera"):
        scans = await collect(scanner, limit_s=30)
    assert len(scans) == 32 and len({s.text for s in scans}) == 32
    dropped = [r for r in caplog.records if "lane not keeping up, dropped read" in r.getMessage()]
    assert len(dropped) == 8
