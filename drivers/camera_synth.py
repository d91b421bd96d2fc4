"""Synthetic camera footage: ticket codes presented the way people present them, for tests,
benchmarks and demos (no camera needed).

A scene is a list of 8-bit gray frames: a textured, unevenly lit background; each ticket enters,
moves, and leaves, optionally tilted, blurred, under glare, dim and noisy, or inverted (a dark-mode
phone screen); empty stretches in between. :func:`write_video` stores frames as an MJPG AVI (what
a USB camera sends), :func:`write_images` as numbered PNGs. segno and OpenCV are imported when used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Gray = NDArray[np.uint8]
Style = Literal["plain", "moving", "tilted", "blurred", "glare", "dim", "inverted"]
STYLES: tuple[Style, ...] = ("moving", "tilted", "blurred", "glare", "dim", "inverted")


def _to_gray8(values: NDArray[np.floating[Any]]) -> Gray:
    return np.asarray(np.clip(values, 0, 255), dtype=np.uint8)


def code_image(text: str, *, module_px: int = 4, border: int = 4, kind: str = "qr") -> Gray:
    """The code for ``text`` (``qr``, or ``microqr``), black on white, ``module_px`` per module."""
    import segno

    code = segno.make(text, error="m", micro=(kind == "microqr"), boost_error=False)
    dark = np.array([list(row) for row in code.matrix], dtype=bool)
    dark = np.pad(dark, border, constant_values=False)
    img = np.where(dark, 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(img, module_px, axis=0), module_px, axis=1)


def background(width: int, height: int, rng: np.random.Generator) -> Gray:
    """A textured, unevenly lit scene without any code in it."""
    import cv2

    small = rng.integers(60, 190, (max(2, height // 16), max(2, width // 16)), dtype=np.uint8)
    texture = np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    ramp = np.linspace(0.75, 1.1, width, dtype=np.float32)[None, :]
    grain = rng.normal(0, 4, (height, width))
    return _to_gray8(texture.astype(np.float32) * ramp + grain)


def place(
    frame: Gray,
    code: Gray,
    center: tuple[float, float],
    *,
    angle_deg: float = 0.0,
    tilt: float = 0.0,
    scale: float = 1.0,
) -> Gray:
    """``frame`` with ``code`` pasted at ``center``, rotated, and ``tilt`` (0..0.5) in perspective."""
    import cv2

    h, w = code.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    half_w, half_h = w * scale / 2, h * scale / 2
    # Perspective: the far edge shrinks by ``tilt``, as when a phone is held leaning back.
    corners = np.array(
        [
            [-half_w * (1 - tilt), -half_h],
            [half_w * (1 - tilt), -half_h],
            [half_w, half_h],
            [-half_w, half_h],
        ],
        dtype=np.float32,
    )
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=np.float32)
    dst = (corners @ rot.T + np.array(center, dtype=np.float32)).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpPerspective(code, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpPerspective(np.full_like(code, 255), matrix, size, flags=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32) / 255
    return _to_gray8(frame.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha)


def motion_blur(frame: Gray, length: int, angle_deg: float = 0.0) -> Gray:
    """Linear motion blur over ``length`` pixels."""
    import cv2

    if length <= 1:
        return frame
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle_deg, 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rot, (length, length)), dtype=np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    return np.asarray(cv2.filter2D(frame, -1, kernel), dtype=np.uint8)


def glare(frame: Gray, center: tuple[float, float], radius: float, strength: float = 0.8) -> Gray:
    """A bright reflection: a soft white spot of ``radius`` pixels."""
    h, w = frame.shape
    ys, xs = np.ogrid[:h, :w]
    d2 = (xs - center[0]) ** 2 + (ys - center[1]) ** 2
    spot = np.exp(-d2 / (2 * (radius / 2) ** 2)).astype(np.float32) * strength
    return _to_gray8(frame.astype(np.float32) * (1 - spot) + 255 * spot)


@dataclass(frozen=True, slots=True)
class Presentation:
    """One ticket held up to the camera for ``frames`` frames in a given ``style``."""

    text: str
    style: Style = "moving"
    frames: int = 30


def _code_frame(base: Gray, code: Gray, p: Presentation, i: int, rng: np.random.Generator) -> Gray:
    import cv2

    h, w = base.shape
    progress = i / max(1, p.frames - 1)
    cx = w * (0.35 + 0.3 * progress) if p.style != "plain" else w / 2
    cy = h * (0.5 + 0.08 * math.sin(progress * math.pi))
    angle = {"tilted": 35.0, "inverted": -12.0}.get(p.style, 4.0 * math.sin(progress * 6))
    tilt = 0.28 if p.style == "tilted" else 0.05
    img = code if p.style != "inverted" else (255 - code)
    frame = place(base, img, (cx, cy), angle_deg=angle, tilt=tilt)
    if p.style == "blurred":
        frame = np.asarray(cv2.GaussianBlur(frame, (0, 0), 1.1), dtype=np.uint8)
        frame = motion_blur(frame, 3 + i % 3, 10.0)
    elif p.style == "glare":
        frame = glare(frame, (cx + w * 0.04, cy - h * 0.05), radius=w * 0.12, strength=0.8)
    elif p.style == "dim":
        frame = _to_gray8(frame.astype(np.float32) * 0.3 + 8 + rng.normal(0, 4, frame.shape))
    if i == p.frames // 2:  # a jerk of the hand: one frame no decoder can read
        frame = motion_blur(frame, 41, 0.0)
    return frame


def scene(
    presentations: Sequence[Presentation],
    *,
    width: int = 640,
    height: int = 480,
    gap_frames: int = 60,
    seed: int = 7,
    module_px: int = 4,
) -> list[Gray]:
    """Frames: an empty stretch of ``gap_frames``, then each presentation followed by another gap."""
    rng = np.random.default_rng(seed)
    base = background(width, height, rng)
    frames: list[Gray] = [base] * gap_frames
    for p in presentations:
        code = code_image(p.text, module_px=module_px)
        frames += [_code_frame(base, code, p, i, rng) for i in range(p.frames)]
        frames += [base] * gap_frames
    return frames


def still(
    text: str, *, width: int = 640, height: int = 480, seed: int = 7, module_px: int = 4
) -> Gray:
    """One frame with ``text``'s code held straight in the middle."""
    rng = np.random.default_rng(seed)
    base = background(width, height, rng)
    return place(base, code_image(text, module_px=module_px), (width / 2, height / 2))


def write_video(path: Path, frames: Sequence[Gray], fps: float = 30.0) -> Path:
    """Write gray ``frames`` as an MJPG AVI (what a USB camera sends). Raises OSError on failure."""
    import cv2

    h, w = frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h), False)
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def write_images(folder: Path, frames: Sequence[Gray], suffix: str = ".png") -> list[Path]:
    """Write ``frames`` as ``frame-00001.png``... into ``folder``. Raises OSError on failure."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, frame in enumerate(frames, 1):
        path = folder / f"frame-{n:05d}{suffix}"
        if not cv2.imwrite(str(path), frame):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths
