"""The suite passes in a fresh clone: everything the tests read is in the repository.

A user's clone has no ``../shared`` folder beside it (the dev machine's reference data), so no
test, fixture or test helper may point there; COCO8 is vendored in ``tests/data/coco8`` instead.
``.ci/run`` proves the whole suite this way by running it in a clone placed where no ``../shared``
exists; this test fails fast when a reference creeps back in.
"""

import re
from pathlib import Path

import yaml
from conftest import COCO8, ROOT

#: Ways a path to the folder beside the checkout is written: ``../shared``, ``ROOT.parent / "shared"``,
#: ``Path(...).parents[2]``-style climbs out of the repository, the dev machine's absolute ``/work/shared``.
_OUTSIDE = re.compile(
    r"\.\./+shared\b"  # ../shared
    r"|['\"]shared['\"]\s*/"  # "shared" / "data"
    r"|/\s*['\"]shared['\"]"  # ROOT.parent / "shared"
    r"|\bROOT\.parent\b"  # anything beside the checkout
    r"|\.parents\[[2-9]\]"  # two folders up from tests/
    r"|/work/shared\b"
)
_TEXT = {".py", ".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".txt", ".md", ".sh", ""}


def _test_files() -> list[Path]:
    """Every text file the test run reads: tests/ (but this file), the conformance suite, the CI script, pytest's settings."""
    here = Path(__file__).resolve()
    files = [
        p
        for p in (ROOT / "tests").rglob("*")
        if p.is_file() and p.suffix in _TEXT and p.resolve() != here and "__pycache__" not in p.parts
    ]
    return files + [ROOT / "hpo" / "testing.py", ROOT / "pyproject.toml", ROOT / ".ci" / "run"]


def test_no_test_reads_a_folder_beside_the_checkout():
    found = []
    for f in _test_files():
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                found.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "tests must not read ../shared (a user's clone has none); use tests/data:\n" + "\n".join(found)


def test_the_vendored_coco8_is_complete():
    root = COCO8.parent
    assert root == ROOT / "tests" / "data" / "coco8"
    doc = yaml.safe_load(COCO8.read_text())
    assert doc["path"] == "." and doc["train"] == "images/train" and doc["val"] == "images/val" and len(doc["names"]) == 80
    for split in ("train", "val"):
        images = sorted(p.stem for p in (root / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
        assert len(images) == 4 and images == labels, (split, images, labels)
    assert "GNU GENERAL PUBLIC LICENSE" in (root / "LICENSE").read_text() and "COCO8" in (root / "README.md").read_text()
    assert not list(root.rglob("*.cache")), "Ultralytics label caches in the checkout: tests must train on a copy"
