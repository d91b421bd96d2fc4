"""`gate-agent check --image` reads what the camera reads (issue 12, part 6).

It decodes with the camera driver's engine (zxing-cpp by default, ``--engine pyzbar``) on the
camera's gray plane. Checked on the real QR photos of tests/vectors/barcodes against the camera
pipeline itself (a ``file://`` CameraScanner per image), and on camera-like photos of an issued
ticket (shrunk, turned, tilted, blurred, noisy, JPEG; some as a dark-mode screen), which the
command must decode and explain.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from agent import ticket_files
from agent.app.check import read_image
from drivers.camera import CameraScanner
from drivers.camera_synth import code_image

VECTORS = Path(__file__).resolve().parent / "vectors" / "barcodes"
TICKET = VECTORS.parent / "photo-ticket"
EXE = (sys.executable, "-m", "agent")

# (scale, turn in degrees, tilt, blur sigma, dark mode, noise sigma) of each ticket photo
PHOTOS = [
    (0.7, 10, 0.3, 1.0, False, 6),
    (0.65, -25, 0.3, 1.0, False, 8),
    (0.7, 40, 0.2, 0.8, True, 5),
    (0.75, 0, 0.4, 1.2, False, 10),
    (0.7, 70, 0.3, 1.0, True, 12),
    (0.6, 15, 0.2, 0.9, False, 4),
    (0.7, -50, 0.3, 1.0, False, 8),
    (0.8, 30, 0.0, 1.4, True, 6),
]


def _qr_samples() -> list[tuple[Path, str]]:
    out = []
    for folder in sorted(p for p in VECTORS.iterdir() if p.name.startswith("qrcode-")):
        for image in sorted(folder.iterdir()):
            expected = image.with_suffix(".txt")
            if image.suffix in (".png", ".webp", ".jpg") and expected.exists():
                out.append((image, expected.read_bytes().decode("utf-8")))
    return out


async def _camera_reads(image: Path) -> list[str]:
    """What the camera scanner reads from ``image`` played as a file:// source."""
    scanner = CameraScanner.from_url(f"file://{image}?fps=0")
    await scanner.open()
    try:
        return await asyncio.wait_for(_drain(scanner), 30)
    finally:
        await scanner.close()


async def _drain(scanner: CameraScanner) -> list[str]:
    return [scan.text async for scan in scanner.scans()]


def _photo(qr: NDArray[np.uint8], index: int) -> NDArray[np.uint8]:
    """A 640x480 camera-like photo of ``qr`` with the settings of PHOTOS[index]."""
    scale, turn, tilt, blur, dark, noise = PHOTOS[index]
    rng = np.random.default_rng(index)
    code = np.asarray(255 - qr if dark else qr, dtype=np.uint8)
    shrunk = cv2.resize(code, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    code = np.asarray(shrunk, dtype=np.uint8)
    h, w = code.shape
    width, height = 640, 480
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    a = np.deg2rad(turn)
    placed = []
    for cx, cy in corners:
        x, y = cx - w / 2, (cy - h / 2) * (1 - tilt * (cx - w / 2) / w)  # one side further away
        placed.append(
            (width / 2 + x * np.cos(a) - y * np.sin(a), height / 2 + x * np.sin(a) + y * np.cos(a))
        )
    src, dst = np.array(corners, dtype=np.float32), np.array(placed, dtype=np.float32)
    warp = cv2.getPerspectiveTransform(src, dst)
    inside = cv2.warpPerspective(np.full_like(code, 255), warp, (width, height)) > 0
    background = rng.integers(90, 130, (height, width), dtype=np.uint8)
    image = np.where(inside, cv2.warpPerspective(code, warp, (width, height)), background)
    image = cv2.GaussianBlur(image.astype(np.uint8), (0, 0), blur)
    return np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ticket(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[Path]]:
    """(keys folder, ticket text, its photos as JPEG files).

    One stored ticket (TICKET: its issuer's root.pub and trust.json, kid 11, and its text): the
    photos are the same in every run. A fresh ticket each run made a different QR each run, and
    for about 1 in 40 of them the sharpest turn (photo 6) was past the decoder's edge.
    """
    d = tmp_path_factory.mktemp("photos")
    (d / "keys").mkdir()
    for name in ("root.pub", "trust.json"):
        shutil.copy(TICKET / name, d / "keys" / name)
    [txt] = ticket_files.write_tickets(d / "tickets", [(TICKET / "ticket.txt").read_text().strip()])
    qr = cv2.imread(str(txt.with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
    photos = []
    for i in range(len(PHOTOS)):
        path = d / f"photo-{i}.jpg"
        cv2.imwrite(
            str(path), _photo(np.asarray(qr, dtype=np.uint8), i), [cv2.IMWRITE_JPEG_QUALITY, 80]
        )
        photos.append(path)
    return d / "keys", txt.read_text().strip(), photos


def test_check_reads_every_real_photo_the_camera_reads() -> None:
    samples = _qr_samples()
    camera = {p for p, text in samples if text in asyncio.run(_camera_reads(p))}
    checked = {p for p, text in samples if text in [c.text for c in read_image(p)]}
    misread = [
        p.name
        for p, text in samples
        if (got := read_image(p)) and text not in [c.text for c in got]
    ]
    assert len(samples) >= 130
    assert camera - checked == set()
    assert len(checked) >= 0.85 * len(samples)  # measured 125/137 (the camera: 125)
    assert misread == []


def test_check_reads_camera_like_photos_of_a_ticket(ticket: tuple[Path, str, list[Path]]) -> None:
    _, text, photos = ticket
    for photo in photos:
        camera = asyncio.run(_camera_reads(photo))
        checked = [c.text for c in read_image(photo)]
        assert set(camera) <= set(checked), photo.name
        assert checked == [text], photo.name


@pytest.mark.parametrize("index", [0, 4])  # a paper ticket, a turned dark-mode screen
def test_the_command_decodes_and_explains_a_ticket_photo(
    ticket: tuple[Path, str, list[Path]], index: int
) -> None:
    keys, text, photos = ticket
    done = subprocess.run(
        [*EXE, "check", "--keys", str(keys), "--image", str(photos[index])],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "image:     a qr code, read by zxing"
    assert lines[1].startswith("format:    tk1   kid: 11")
    assert "ok   signature" in done.stdout and lines[-1].startswith("verdict:   ADMIT")
    assert text not in done.stdout + done.stderr


def test_the_engine_is_selectable(ticket: tuple[Path, str, list[Path]]) -> None:
    keys, _, _ = ticket
    clean = keys.parent / "tickets" / "ticket-0001.png"
    for engine in ("zxing", "pyzbar"):
        done = subprocess.run(
            [*EXE, "check", "--keys", str(keys), "--json", "--engine", engine, "--image", str(clean)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["image"] == {"engine": engine, "codes": 1, "symbology": "qr"}
        assert (body["verdict"], body["format"]) == ("admit", "tk1")
    unknown = subprocess.run(
        [*EXE, "check", "--keys", str(keys), "--engine", "zbar", "--image", str(clean)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2 and "invalid choice: 'zbar'" in unknown.stderr


def test_a_photo_with_another_code_beside_the_ticket_checks_the_ticket(
    ticket: tuple[Path, str, list[Path]],
) -> None:
    """Found in a user trial: `check --image` checked the first code of a photo, which for a
    ticket printed with a web address's code beside it was the address: "not a ticket"."""
    keys, text, _ = ticket
    url, code = code_image("https://venue.example/faq"), code_image(text)
    height = max(url.shape[0], code.shape[0])
    side = [np.pad(c, ((0, height - c.shape[0]), (0, 0)), constant_values=255) for c in (url, code)]
    photo = keys.parent / "two-codes.png"
    # The address's code where the decoder reads it first (a review: else the test may never
    # see the first code passed over).
    for order in (side, side[::-1]):
        assert cv2.imwrite(str(photo), np.hstack(order))
        if [c.text for c in read_image(photo)] == ["https://venue.example/faq", text]:
            break
    else:
        raise AssertionError("no layout the decoder reads the address's code first in")
    done = subprocess.run(
        [*EXE, "check", "--keys", str(keys), "--image", str(photo)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 barcodes in the image; checking the 2nd, of a ticket format" in done.stderr
    assert done.stdout.splitlines()[-1].startswith("verdict:   ADMIT")


def test_a_photo_too_blurred_to_read_is_not_called_not_a_ticket(
    ticket: tuple[Path, str, list[Path]],
) -> None:
    """Found in a user trial: a blurred photo of a valid ticket was explained as "format: not
    a ticket"; nothing was read from it, so there is nothing to call a ticket or not."""
    keys, _, photos = ticket
    blurred = keys.parent / "blurred.jpg"
    image = cv2.imread(str(photos[0]), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    assert cv2.imwrite(str(blurred), cv2.GaussianBlur(image, (0, 0), 6))
    done = subprocess.run(
        [*EXE, "check", "--keys", str(keys), "--image", str(blurred)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "image:     no barcode found by zxing",
        "verdict:   DENY (nothing to check) - a camera reads no code in this photo either; try"
        " a sharper, closer or better lit photo, or the other --engine",
    ]
    assert "not a ticket" not in done.stdout.lower()
