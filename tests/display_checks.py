"""Checks of what a staff display shows, for a steward who cannot tell red from green.

* :func:`deuteranopia`: an sRGB colour as a deuteranope sees it (Machado, Oliveira and Fernandes
  2009, severity 1.0, applied in linear RGB).
* :func:`delta_e`: the CIE76 colour difference (Euclidean in CIELAB, D65), where 2.3 is just
  noticeable and differences over 40 are unmistakable.
* :func:`contrast`: the WCAG 2 contrast ratio (AA asks 4.5 for text, 3 for large text).
* :func:`dominant`: the most frequent colour of a PNG screenshot, from its pixels (OpenCV, a
  dependency of the gate already, decodes it).
* :data:`TEXT_COLOURS_JS`: every visible piece of text on a page with its colour and the colour
  of the background it is drawn on, from the page's computed styles.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

RGB = tuple[int, int, int]

MACHADO_DEUTERANOPIA = (
    (0.367322, 0.860646, -0.227968),
    (0.280085, 0.672501, 0.047413),
    (-0.011820, 0.042940, 0.968881),
)


def _linear(c: float) -> float:
    c /= 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _encode(c: float) -> int:
    c = min(1.0, max(0.0, c))
    c = c * 12.92 if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
    return round(c * 255)


def deuteranopia(rgb: RGB) -> RGB:
    lin = [_linear(c) for c in rgb]
    r, g, b = (_encode(sum(row[j] * lin[j] for j in range(3))) for row in MACHADO_DEUTERANOPIA)
    return r, g, b


def _lab(rgb: RGB) -> tuple[float, float, float]:
    r, g, b = (_linear(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def delta_e(a: RGB, b: RGB) -> float:
    return math.dist(_lab(a), _lab(b))


def luminance(rgb: RGB) -> float:
    r, g, b = (_linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    dark, light = sorted((luminance(a), luminance(b)))
    return (light + 0.05) / (dark + 0.05)


def dominant(png: Path) -> RGB:
    """The colour most pixels of the screenshot have (its background)."""
    image = cv2.imdecode(np.frombuffer(png.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{png}: not an image"
    pixels = image.reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    b, g, r = (int(v) for v in colours[int(np.argmax(counts))])
    return r, g, b


def parse_css_colour(text: str) -> RGB:
    """``rgb(r, g, b)`` or an opaque ``rgba(...)`` as computed by the browser."""
    assert text.startswith(("rgb(", "rgba(")), text
    parts = [p.strip() for p in text[text.index("(") + 1 : -1].split(",")]
    if len(parts) == 4:
        assert float(parts[3]) == 1.0, f"translucent colour {text}: contrast undefined"
    r, g, b = (round(float(p)) for p in parts[:3])
    return r, g, b


# [{text, color, background, size}] for every element that shows text of its own.
TEXT_COLOURS_JS = """(() => {
  const out = [];
  const bg = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor;
      if (c && c !== 'transparent' && c !== 'rgba(0, 0, 0, 0)') return c;
    }
    return 'rgb(255, 255, 255)';
  };
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest('[hidden]')) continue;
    const s = getComputedStyle(el);
    if (s.visibility !== 'visible' || s.display === 'none') continue;
    out.push({text: el.innerText.trim(), color: s.color, background: bg(el),
              size: parseFloat(s.fontSize)});
  }
  return out;
})()"""
