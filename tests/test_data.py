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
    for split in ("tr", "va"):
        (root / "imgs" / split / "0.jpg").write_bytes(b"")
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


def _cls_tree(root: Path, val_images: bool = True) -> Path:
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            if split == "train" or val_images:
                (root / split / cls / "0.png").write_bytes(b"")
    return root


def test_a_split_without_images_is_refused(tmp_path):
    empty_val = _cls_tree(tmp_path / "c1", val_images=False)
    with pytest.raises(DataError, match=r"classification split '.*c1/val' has no images in its 2 class folders \(a, b\)"):
        resolve_data(empty_val, "classify")
    no_classes = _cls_tree(tmp_path / "c2")
    for cls in ("a", "b"):
        (no_classes / "val" / cls / "0.png").unlink()
        (no_classes / "val" / cls).rmdir()
    (no_classes / "val" / "stray.png").write_bytes(b"")  # outside class folders: ImageFolder ignores it
    with pytest.raises(DataError, match=r"split '.*c2/val' has no class folders"):
        resolve_data(no_classes, "classify")
    not_images = _cls_tree(tmp_path / "c3", val_images=False)
    (not_images / "val" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="has no images"):
        resolve_data(not_images, "classify")
    assert resolve_data(_cls_tree(tmp_path / "ok"), "classify").kind == "folder"

    det = tmp_path / "det"
    (det / "images" / "train" / "sub").mkdir(parents=True)
    (det / "images" / "train" / "sub" / "0.jpg").write_bytes(b"")  # nested: Ultralytics globs **/*.*
    (det / "images" / "val").mkdir(parents=True)
    y = det / "data.yaml"
    y.write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: a}\n")
    with pytest.raises(DataError, match=r"^data: val '.*det/images/val' in '.*data.yaml' holds no images \(avif, bmp"):
        resolve_data(y, "detect")
    (det / "val.txt").write_text("\n")
    y.write_text("path: .\ntrain: images/train\nval: val.txt\nnames: {0: a}\n")
    with pytest.raises(DataError, match=r"val '.*det/val.txt' .* holds no images"):
        resolve_data(y, "detect")
    (det / "val.txt").write_text("./images/train/sub/0.jpg\n")
    assert resolve_data(y, "detect").content["val"] == str(det / "val.txt")


def test_read_only_dataset_warns_that_labels_are_rescanned(read_only, coco8):
    import shutil
    import warnings

    from hpo import HpoWarning
    from hpo.config import build_config
    from hpo.data import cache_warnings

    src, ro = read_only
    _cls_tree(src / "cls")
    shutil.copytree(coco8.parent / "images", src / "det" / "images")
    shutil.copytree(coco8.parent / "labels", src / "det" / "labels")
    for cache in (src / "det" / "labels").glob("*.cache"):
        cache.unlink()
    (src / "det" / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: person}\n")
    found = cache_warnings(resolve_data(ro / "cls", "classify"))
    assert len(found) == 2 and all(f"data: '{ro / 'cls'}' is read-only" in w for w in found)
    assert "train.cache" in found[0] and "val.cache" in found[1]
    found = cache_warnings(resolve_data(ro / "det" / "data.yaml", "detect"))
    assert [w.split(" and ")[0] for w in found] == [
        f"data: '{ro / 'det' / 'labels'}' is read-only, so Ultralytics cannot save {s}.cache" for s in ("train", "val")
    ]
    assert cache_warnings(resolve_data(src / "cls", "classify")) == []  # writable: Ultralytics saves its cache
    (src / "det" / "labels" / "train.cache").write_bytes(b"")
    (src / "det" / "labels" / "val.cache").write_bytes(b"")
    assert cache_warnings(resolve_data(ro / "det" / "data.yaml", "detect")) == []  # caches there: nothing to rescan

    with warnings.catch_warnings(record=True) as caught:  # the Python API shows them too
        warnings.simplefilter("always")
        cfg = build_config(
            model="yolov8n-cls.yaml",
            data=ro / "cls",
            space={"lr0": (1e-4, 1e-2)},
            iterations=2,
            epochs=1,
            train_args={"val": False, "optimizer": "AdamW"},
            output=src / "out",
        )
    texts = [str(w.message) for w in caught if issubclass(w.category, HpoWarning)]
    assert texts == list(cfg.warnings) and len(texts) == 3
    assert texts[2].startswith("train args: val=False validates only after the last epoch")
