"""A plain clone passes its tests with nothing beside it: no test, benchmark or CI script reaches
outside the repository (the test vectors live in tests/vectors/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a sibling folder of the checkout (the shared vectors folder next to it) or an absolute path here
OUTSIDE = re.compile(r"""\.\./shared|["']shared["']\s*/|/\s*["']shared["']|/work/""")
PARENTS = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")


def _sources() -> list[Path]:
    files = [p for p in (ROOT / "tests").rglob("*.py") if "vectors" not in p.parts]
    files += [p for p in (ROOT / ".ci").iterdir() if p.is_file()]
    return sorted(files)


def _outside(path: Path, line: str) -> bool:
    """True when ``line`` of ``path`` names a place outside the checkout."""
    top = len(path.relative_to(ROOT).parts) - 1  # parents[top] of the file is the checkout
    return OUTSIDE.search(line) is not None or any(int(n) > top for n in PARENTS.findall(line))


def test_no_test_or_ci_script_reaches_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _sources()
        if path != Path(__file__).resolve()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _outside(path, line)
    ]
    assert found == []
    assert _outside(ROOT / "tests" / "x.py", 'V = Path(__file__).resolve().parents[2] / "v"')
    assert not _outside(ROOT / "tests" / "bench" / "x.py", "Path(__file__).resolve().parents[2]")


def test_the_vectors_are_in_the_repository() -> None:
    barcodes = ROOT / "tests" / "vectors" / "barcodes"
    assert (barcodes / "README.md").read_text().count("Apache-2.0") >= 1  # licence and source
    assert len(list(barcodes.rglob("*.png"))) > 100
    assert (ROOT / "tests" / "vectors" / "pretix" / "tickets.json").is_file()
