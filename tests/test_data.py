"""Dataset resolution and the built-in demo datasets."""

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from hpo import DataError
from hpo.data import resolve_data
from hpo.datasets import make_digits_cls, make_digits_det


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_coco8_path_dot_resolves_to_its_own_folder_from_any_cwd(coco8, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(coco8, tmp_path)
    r = resolve_data(rel, "detect")
    assert r.content["path"] == str(coco8.parent)
    assert r.content["train"] == str(coco8.parent / "images" / "train")
    assert len(r.content["names"]) == 80
    written = yaml.safe_load(Path(r.write(tmp_path)).read_text())
    assert written["val"] == str(coco8.parent / "images" / "val")


def test_relative_path_key_is_relative_to_the_yaml(tmp_path):
    root = tmp_path / "vol" / "ds"
    (root / "imgs" / "tr").mkdir(parents=True)
    (root / "imgs" / "va").mkdir(parents=True)
    y = tmp_path / "vol" / "data.yaml"
    y.write_text("path: ds\ntrain: imgs/tr\nval: imgs/va\nnames: {0: a}\ndownload: https://example.invalid/x.zip\n")
    r = resolve_data(y, "detect")
    assert r.content["path"] == str(root)
    assert "download" not in r.content  # never download


@pytest.mark.parametrize(
    "content, message",
    [
        ("path: .\ntrain: images/train\nval: images/missing\nnames: {0: a}\n", "val 'images/missing'"),
        ("path: nowhere\ntrain: a\nval: b\nnames: {0: a}\n", "which does not exist"),
        ("path: .\ntrain: images/train\nnames: {0: a}\n", "needs both 'train' and 'val'"),
        ("path: .\ntrain: images/train\nval: images/train\n", "has no 'names'"),
        ("- just\n- a list\n", "is not a data YAML mapping"),
    ],
)
def test_bad_data_yaml(tmp_path, content, message):
    (tmp_path / "images" / "train").mkdir(parents=True)
    y = tmp_path / "data.yaml"
    y.write_text(content)
    with pytest.raises(DataError, match=message):
        resolve_data(y, "detect")


def test_missing_data_and_wrong_kind(tmp_path, digits_cls, digits_det):
    with pytest.raises(DataError, match="does not exist"):
        resolve_data(tmp_path / "nope.yaml", "detect")
    with pytest.raises(DataError, match="is a folder; for task 'detect' give its data YAML"):
        resolve_data(digits_det.parent, "detect")
    with pytest.raises(DataError, match="classification dataset is a folder"):
        resolve_data(digits_det, "classify")
    assert resolve_data(digits_cls, "classify").kind == "folder"


def test_digits_cls_layout_and_determinism(tmp_path, digits_cls):
    counts = {s: sum(1 for _ in (digits_cls / s).rglob("*.png")) for s in ("train", "val")}
    assert counts == {"train": 1402, "val": 395}  # all 1,797 UCI digits, 22% val
    assert sorted(p.name for p in (digits_cls / "train").iterdir()) == [str(d) for d in range(10)]
    again = make_digits_cls(tmp_path / "again", seed=0)
    assert _digest(again) == _digest(digits_cls)
    other = make_digits_cls(tmp_path / "other", seed=1)
    assert _digest(other) != _digest(digits_cls)


def test_digits_det_labels_match_images_and_are_deterministic(tmp_path):
    from PIL import Image

    a = make_digits_det(tmp_path / "a", seed=3, n_train=8, n_val=2)
    b = make_digits_det(tmp_path / "b", seed=3, n_train=8, n_val=2)
    assert _digest(a.parent) == _digest(b.parent)
    data = yaml.safe_load(a.read_text())
    assert data["path"] == "." and len(data["names"]) == 10
    labels = sorted((a.parent / "labels" / "train").glob("*.txt"))
    assert len(labels) == 8
    for lab in labels:
        img = Image.open(a.parent / "images" / "train" / (lab.stem + ".png"))
        assert img.size == (96, 96)
        rows = [r.split() for r in lab.read_text().splitlines()]
        assert 1 <= len(rows) <= 4
        for cls, *box in rows:
            assert 0 <= int(cls) <= 9
            assert all(0.0 < float(v) <= 1.0 for v in box)
    with pytest.raises(Exception, match="not empty"):
        make_digits_det(tmp_path / "a", seed=3)
