"""Decoder engines: configuration errors, generated codes, and real photos with known texts."""

from __future__ import annotations

import secrets
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp

from agent.errors import DriverError
from agent.tickets import base45
from drivers import camera_synth as synth
from drivers.decoders import (
    Decoded,
    Decoder,
    PyzbarDecoder,
    ZxingDecoder,
    check_formats,
    make_decoder,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "barcodes"


def ticket_text() -> str:
    """A TK1-shaped text: 166 QR-alphanumeric characters (QR version 7-M)."""
    return "TK1:" + base45.encode(secrets.token_bytes(108))


def zxing_image(text: str, fmt: zxingcpp.BarcodeFormat, scale: int = 4) -> np.ndarray:
    code = np.asarray(zxingcpp.create_barcode(text, fmt).to_image(scale=scale), dtype=np.uint8)
    return np.pad(code, 40, constant_values=255)  # quiet zone and some paper around it


def samples(folder: str) -> list[tuple[Path, str]]:
    """(image, expected text) pairs of a vectors folder; CR LF kept as stored."""
    out = []
    for image in sorted((VECTORS / folder).iterdir()):
        expected = image.with_suffix(".txt")
        if image.suffix in (".png", ".webp", ".jpg") and expected.exists():
            out.append((image, expected.read_bytes().decode("utf-8")))
    return out


def read(decoder: Decoder, image: Path) -> list[Decoded]:
    gray = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, image
    return decoder.decode(np.asarray(gray, dtype=np.uint8))


@pytest.mark.parametrize(
    ("engine", "formats", "named"),
    [
        ("zbar", ["qr"], "zbar"),
        ("zxing", ["ean13"], "ean13"),
        ("zxing", ["qr", "bogus"], "bogus"),
        ("pyzbar", ["aztec"], "aztec"),
        ("pyzbar", ["datamatrix"], "datamatrix"),
        ("zxing", [], "formats"),
        ("zxing", [""], "formats"),
    ],
)
def test_unknown_engine_or_format_is_refused(engine: str, formats: list[str], named: str) -> None:
    with pytest.raises(DriverError, match=named):
        make_decoder(engine, formats)


def test_format_names_are_normalised_and_deduplicated() -> None:
    assert check_formats("zxing", ["QR", "qr", " Aztec"]) == ("qr", "aztec")
    assert make_decoder("pyzbar", ["qr", "code128"]).formats == ("qr", "code128")
    assert make_decoder("zxing").formats == ("qr",)


@pytest.mark.parametrize("engine", ["zxing", "pyzbar"])
def test_engine_reads_a_ticket_and_says_where(engine: str) -> None:
    text = ticket_text()
    frame = synth.still(text, width=640, height=480)
    decoder = make_decoder(engine)
    assert isinstance(decoder, Decoder) and decoder.engine == engine
    (code,) = decoder.decode(frame)
    assert code.text == text and code.raw == text.encode()
    assert code.symbology == "qr"
    x, y, w, h = code.bbox  # the code was placed in the middle, about 180 px wide
    assert 320 - 130 < x < 320 - 60 and 240 - 130 < y < 240 - 60
    assert 140 < w < 240 and 140 < h < 240
    assert text not in repr(code)


@pytest.mark.parametrize("engine", ["zxing", "pyzbar"])
def test_empty_frame_gives_nothing(engine: str) -> None:
    empty = synth.background(640, 480, np.random.default_rng(1))
    assert make_decoder(engine).decode(empty) == []


def test_only_the_configured_formats_are_read() -> None:
    aztec = zxing_image("AZTEC-TICKET-42", zxingcpp.BarcodeFormat.Aztec)
    assert make_decoder("zxing", ["qr"]).decode(aztec) == []
    (code,) = make_decoder("zxing", ["qr", "aztec"]).decode(aztec)
    assert (code.text, code.symbology) == ("AZTEC-TICKET-42", "aztec")


def test_zxing_reads_a_dark_mode_screen() -> None:
    text = ticket_text()
    inverted = 255 - synth.code_image(text, module_px=4)
    frame = np.pad(inverted, 30, constant_values=40)
    assert [c.text for c in make_decoder("zxing").decode(frame)] == [text]


def test_rotation_try_follows_the_setting() -> None:
    upright = zxing_image("GATE-0042-CODE128", zxingcpp.BarcodeFormat.Code128, scale=3)
    sideways = np.ascontiguousarray(np.rot90(upright))
    assert [c.text for c in ZxingDecoder(["code128"], try_rotate=True).decode(sideways)] == [
        "GATE-0042-CODE128"
    ]
    assert ZxingDecoder(["code128"], try_rotate=False).decode(sideways) == []


@pytest.mark.parametrize("engine", ["zxing", "pyzbar"])
@pytest.mark.parametrize(
    "array",
    [np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.float32), np.zeros(64, np.uint8)],
    ids=["colour", "float", "1-d"],
)
def test_decoders_take_only_one_8bit_plane(engine: str, array: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        make_decoder(engine).decode(array)


def test_decoders_accept_views_of_larger_buffers() -> None:
    """A crop or the Y channel of YUYV is a strided view; both engines must read it as is."""
    text = ticket_text()
    frame = synth.still(text, width=640, height=480)
    yuyv = np.stack([frame, np.full_like(frame, 128)], axis=-1)
    luma, crop = yuyv[:, :, 0], frame[100:400, 150:500]
    for decoder in (ZxingDecoder(), PyzbarDecoder()):
        assert [c.text for c in decoder.decode(luma)] == [text]
        assert [c.text for c in decoder.decode(crop)] == [text]


@pytest.mark.parametrize("folder", ["qrcode-5", "qrcode-6"])
def test_zxing_reads_every_real_qr_sample_of_clean_sets(folder: str) -> None:
    decoder = make_decoder("zxing", ["qr"])
    missed = [
        p.name for p, text in samples(folder) if text not in [c.text for c in read(decoder, p)]
    ]
    assert missed == []


def test_zxing_never_misreads_real_qr_photos() -> None:
    """Over every QR photo: a code is read right or not at all; a wrong text is a wrong ticket."""
    decoder = make_decoder("zxing", ["qr"])
    right = wrong = total = 0
    for folder in sorted(p.name for p in VECTORS.iterdir() if p.name.startswith("qrcode-")):
        for image, text in samples(folder):
            texts = [c.text for c in read(decoder, image)]
            total += 1
            right += text in texts
            wrong += bool(texts) and text not in texts
    assert total >= 130
    assert wrong == 0
    assert right >= 0.85 * total  # measured 125/137 (see tests/bench/bench_decoders.py)


@pytest.mark.parametrize(("folder", "fmt"), [("aztec-2", "aztec"), ("pdf417-1", "pdf417")])
def test_zxing_reads_real_aztec_and_pdf417(folder: str, fmt: str) -> None:
    decoder = make_decoder("zxing", [fmt])
    got = [(text in [c.text for c in read(decoder, p)]) for p, text in samples(folder)]
    assert got and all(got)


def test_pyzbar_reads_real_qr_samples_as_well() -> None:
    decoder = make_decoder("pyzbar", ["qr"])
    got = [(text in [c.text for c in read(decoder, p)]) for p, text in samples("qrcode-6")]
    assert sum(got) >= 12  # measured 14/15


def test_missing_library_is_a_driver_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_zxing(name: str, *args: object, **kwargs: object) -> object:
        if name == "zxingcpp":
            raise ImportError("No module named 'zxingcpp'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_zxing)
    with pytest.raises(DriverError, match="zxing-cpp") as info:
        make_decoder("zxing")
    assert isinstance(info.value.__cause__, ImportError)
