"""Dataset resolution and the built-in demo datasets."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from hpo import DataError
from hpo.data import resolve_data
from hpo.datasets import make_digits_cls, make_digits_det


def _digest(folder: Path) -> str:
    """The builder's output: every file but Ultralytics' label caches (``train.cache``), which a
    training on the session's shared dataset writes beside the splits."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".cache"):
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


def test_digits_cls_layout_and_determinism(tmp_path, digits_cls, digits_cls_test):
    old = {s: sum(1 for _ in (digits_cls / s).rglob("*.png")) for s in ("train", "val")}
    assert old == {"train": 1402, "val": 395} and not (digits_cls / "test").exists()  # test_fraction=0: as before
    digits_cls = digits_cls_test  # hpo datasets make's defaults
    counts = {s: sum(1 for _ in (digits_cls / s).rglob("*.png")) for s in ("train", "val", "test")}
    assert counts == {"train": 1079, "val": 359, "test": 359}  # all 1,797 UCI digits, 20% val, 20% test
    names = {s: {p.name for p in (digits_cls / s).rglob("*.png")} for s in counts}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) and not (names["val"] & names["test"])
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
    assert data["test"] == "images/test" and len(list((a.parent / "images" / "test").glob("*.png"))) == 16
    assert len(list((a.parent / "labels" / "test").glob("*.txt"))) == 16
    # the test canvases come after the others: a seed's train and val canvases do not depend on them
    c = make_digits_det(tmp_path / "c", seed=3, n_train=8, n_val=2, n_test=0)
    assert "test" not in yaml.safe_load(c.read_text()) and not (c.parent / "images" / "test").exists()
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            assert _digest(c.parent / kind / split) == _digest(a.parent / kind / split)
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


def test_read_only_dataset_warns_that_labels_are_rescanned(read_only, digits_det):
    import shutil
    import warnings

    from hpo import HpoWarning
    from hpo.data import cache_warnings
    from hpo.validate import build_config

    src, ro = read_only
    _cls_tree(src / "cls")
    shutil.copytree(digits_det.parent, src / "det", ignore=shutil.ignore_patterns("*.cache"))
    rescan = "mount the dataset read-write once to let the cache be written, or copy it to a writable volume"
    found = cache_warnings(resolve_data(ro / "cls", "classify"))
    assert found == [
        f"data: '{ro / 'cls'}' is read-only, so Ultralytics cannot save train.cache and val.cache and rescans the train "
        f"and val labels in every trial; {rescan}"
    ]
    found = cache_warnings(resolve_data(ro / "det" / "data.yaml", "detect"))
    assert found == [
        f"data: '{ro / 'det' / 'labels'}' is read-only, so Ultralytics cannot save train.cache and val.cache and rescans "
        f"the train and val labels in every trial; {rescan}"
    ]
    assert cache_warnings(resolve_data(src / "cls", "classify")) == []  # writable: Ultralytics saves its cache
    (src / "det" / "labels" / "train.cache").write_bytes(b"")  # a cache Ultralytics cannot load is rescanned too
    (src / "det" / "labels" / "val.cache").write_bytes(b"")
    assert cache_warnings(resolve_data(ro / "det" / "data.yaml", "detect")) == [
        f"data: '{ro / 'det' / 'labels'}' is read-only, so Ultralytics cannot replace its stale train.cache and val.cache "
        f"(it is unreadable) and rescans the train and val labels in every trial; {rescan}"
    ]

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
    assert texts == list(cfg.warnings) and len(texts) == 2
    assert texts[1].startswith("train args: val=False validates only after the last epoch")


def _ultralytics_scans(root: Path) -> list[str]:
    """Build Ultralytics' own ClassificationDataset on both splits of ``root`` (as a trial does); return
    what its logger said about the cache (a scan it could not save says "cache not saved")."""
    import logging

    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset
    from ultralytics.utils import LOGGER

    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    LOGGER.addHandler(handler)
    try:
        for split in ("train", "val"):
            ClassificationDataset(root=str(root / split), args=get_cfg(overrides={"imgsz": 32}), augment=False, prefix=split)
    finally:
        LOGGER.removeHandler(handler)
    return [m for m in said if "cache" in m.lower()]


def test_a_stale_cache_on_a_read_only_volume_warns_once_before_the_trials(read_only):
    """The issue's case: the caches exist, but Ultralytics will not use them (written at another
    mount path, or copied with the dataset), so every trial rescans and says so only in its log."""
    import subprocess

    from hpo.data import cache_warnings

    src, ro = read_only
    _cls_tree(src / "cls")
    _ultralytics_scans(src / "cls")  # Ultralytics writes its caches, for the paths under src
    assert (src / "cls" / "train.cache").is_file() and (src / "cls" / "val.cache").is_file()
    assert cache_warnings(resolve_data(src / "cls", "classify")) == []
    found = cache_warnings(resolve_data(ro / "cls", "classify"))  # the same files at another mount path
    assert found == [
        f"data: '{ro / 'cls'}' is read-only, so Ultralytics cannot replace its stale train.cache and val.cache (it lists "
        "other files: the dataset was moved, copied or changed since it was written) and rescans the train and val labels "
        "in every trial; mount the dataset read-write once to let the cache be written, or copy it to a writable volume"
    ]
    assert any("not writable, cache not saved" in m for m in _ultralytics_scans(ro / "cls"))  # Ultralytics agrees
    subprocess.run(["mount", "-o", "remount,bind,rw", str(ro)], check=True)  # written at this path once...
    try:
        _ultralytics_scans(ro / "cls")
    finally:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    assert cache_warnings(resolve_data(ro / "cls", "classify")) == []  # ...the caches are used: nothing to say
    assert not any("cache not saved" in m for m in _ultralytics_scans(ro / "cls"))


def test_image_folder_files_are_torchvisions(tmp_path, digits_cls):
    import torchvision
    from ultralytics.data.utils import IMG_FORMATS

    from hpo.data import _image_folder_files

    root = _cls_tree(tmp_path / "cls")
    (root / "train" / "b" / "deep").mkdir()
    (root / "train" / "b" / "deep" / "1.JPG").write_bytes(b"")
    (root / "train" / "b" / "notes.txt").write_text("x")
    for split in (root / "train", digits_cls / "val"):
        base = torchvision.datasets.ImageFolder(
            root=split, is_valid_file=lambda x: x.rpartition(".")[-1].lower() in IMG_FORMATS, allow_empty=True
        )
        assert _image_folder_files(split) == [x[0] for x in base.samples] + base.classes


def test_a_symlink_loop_in_a_split_is_refused_naming_the_link(tmp_path):
    cls = _cls_tree(tmp_path / "cls")
    loop = cls / "train" / "a" / "loop"
    loop.symlink_to("..")  # ln -s .. train/a/loop: ImageFolder would walk train/ again and again
    with pytest.raises(DataError) as e:
        resolve_data(cls, "classify")
    assert str(e.value) == (
        f"data: '{loop}' is a symbolic link to '{cls / 'train'}', a folder that contains it: Ultralytics would follow it "
        "round and round (the same images counted again and again, under the link's class); remove the link"
    )
    loop.unlink()
    (cls / "val" / "b" / "self").symlink_to(cls / "val" / "b")  # to its own folder, absolute
    with pytest.raises(DataError, match=r"'.*val/b/self' is a symbolic link to '.*val/b', a folder that contains it"):
        resolve_data(cls, "classify")
    (cls / "val" / "b" / "self").unlink()
    elsewhere = tmp_path / "more" / "a"
    elsewhere.mkdir(parents=True)
    (elsewhere / "1.png").write_bytes(b"")
    (cls / "train" / "a" / "more").symlink_to(elsewhere)  # a link out of the tree is no loop: followed, as Ultralytics does
    assert resolve_data(cls, "classify").kind == "folder"

    det = tmp_path / "det"
    (det / "images" / "train").mkdir(parents=True)
    (det / "images" / "val").mkdir(parents=True)
    for split in ("train", "val"):
        (det / "images" / split / "0.jpg").write_bytes(b"")
    (det / "images" / "train" / "up").symlink_to(det / "images")  # Ultralytics' glob('**/*.*') follows it too
    (det / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: a}\n")
    with pytest.raises(DataError, match=r"'.*images/train/up' is a symbolic link to '.*det/images', a folder that contains it"):
        resolve_data(det / "data.yaml", "detect")


def test_label_class_ids_outside_names_are_refused_up_front(tmp_path, digits_det):
    import shutil

    det = tmp_path / "det"
    shutil.copytree(digits_det.parent, det, ignore=shutil.ignore_patterns("*.cache"))
    y = det / "data.yaml"
    assert len(resolve_data(y, "detect").content["names"]) == 10  # labels 0-9: fine
    label = sorted((det / "labels" / "train").glob("*.txt"))[3]
    original = label.read_text()
    n = len(original.splitlines())
    label.write_text(original + "999 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError) as e:
        resolve_data(y, "detect")
    assert str(e.value) == (
        f"data: train label '{label}' line {n + 1} has class 999, but '{y}' names 10 classes (ids 0-9): Ultralytics "
        "would drop those images; fix the labels or list every class in 'names'"
    )
    assert resolve_data(y, "detect", single_cls=True).kind == "yaml"  # single_cls=True: every label is class 0
    label.write_text("\ufeff" + original.replace(original.split()[0], "-1", 1))  # a byte-order mark, then a negative id
    with pytest.raises(DataError, match=rf"train label '{label}' line 1 has class -1, but"):
        resolve_data(y, "detect")
    label.write_text(original)
    content = yaml.safe_load(y.read_text())
    y.write_text(yaml.safe_dump({**content, "names": {0: "a"}}))  # one name, labels 0-9
    with pytest.raises(DataError, match=r"names 1 class \(id 0\) \(\d+ such lines in \d+ label files\): Ultralytics"):
        resolve_data(y, "detect")


@pytest.mark.parametrize(
    "names, message",
    [
        ("names: {0: a}\nnames: {0: a, 1: b}\n", r"repeats the key 'names' at line 5 \(first at line 4\); the last value"),
        ("names:\n  0: a\n  0: b\n", r"repeats the key 0 at line 6 \(first at line 5\)"),
        ("names: {0: a, 2: b}\n", r"'names' in '.*' must be numbered 0..1 \(2 classes\), got ids 0, 2"),
        ("names: [a, b]\nnc: 3\n", r"'names' in '.*' lists 2 classes but 'nc: 3' says 3"),
        ("nc: 2.5\n", r"'nc: 2.5' in '.*' must be a whole number of classes"),
    ],
)
def test_a_data_yaml_that_repeats_a_key_or_misnumbers_classes_is_refused(tmp_path, names, message):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "images" / split / "0.jpg").write_bytes(b"")
    y = tmp_path / "data.yaml"
    y.write_text("path: .\ntrain: images/train\nval: images/val\n" + names)
    with pytest.raises(DataError, match=message):
        resolve_data(y, "detect")


def test_the_test_split_is_found_where_ultralytics_validates_elsewhere(tmp_path, digits_cls, digits_cls_test, digits_det):
    from hpo.data import test_split

    assert test_split(resolve_data(digits_cls_test, "classify")) == "test"
    assert test_split(resolve_data(digits_cls, "classify")) is None
    assert test_split(resolve_data(digits_det, "detect")) == "test"
    # a classification folder without val/: Ultralytics validates on test/, so it is no test split
    no_val = tmp_path / "noval"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (no_val / split / cls).mkdir(parents=True)
            shutil.copy(next((digits_cls / "train" / "0").glob("*.png")), no_val / split / cls / "0.png")
    assert test_split(resolve_data(no_val, "classify")) is None
    (no_val / "validation" / "a").mkdir(parents=True)  # Ultralytics' other name of the val split
    assert test_split(resolve_data(no_val, "classify")) == "test"
    # a YAML without test:, and one whose test split holds no image
    content = yaml.safe_load(digits_det.read_text())
    content.pop("test")
    content["path"] = str(digits_det.parent)
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(content))
    assert test_split(resolve_data(tmp_path / "plain.yaml", "detect")) is None
    (tmp_path / "empty").mkdir()
    content["test"] = str(tmp_path / "empty")
    (tmp_path / "empty.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(DataError, match=r"data: test '.*empty' in '.*empty.yaml' holds no images .*remove 'test:'"):
        test_split(resolve_data(tmp_path / "empty.yaml", "detect"))


def test_datasets_make_sizes_and_its_refusals(tmp_path):
    """``hpo datasets make --imgsz/--images``: digits-det's canvases and split sizes, digits-cls's image
    side; a bad size is one line naming the option, exit 2, nothing written."""
    from PIL import Image
    from typer.testing import CliRunner

    from hpo.cli import app

    run = CliRunner().invoke
    res = run(app, ["datasets", "make", "digits-det", str(tmp_path / "det"), "--imgsz", "48", "--images", "6,3,2"])
    assert res.exit_code == 0, res.output
    det = tmp_path / "det"
    assert {s: len(list((det / "images" / s).iterdir())) for s in ("train", "val", "test")} == {"train": 6, "val": 3, "test": 2}
    assert Image.open(next((det / "images" / "train").iterdir())).size == (48, 48)
    res = run(app, ["datasets", "make", "digits-det", str(tmp_path / "det2"), "--images", "4,2,0"])
    assert res.exit_code == 0 and "test" not in yaml.safe_load((tmp_path / "det2" / "data.yaml").read_text())
    res = run(app, ["datasets", "make", "digits-cls", str(tmp_path / "cls"), "--imgsz", "16"])
    assert res.exit_code == 0, res.output
    assert Image.open(next((tmp_path / "cls" / "train" / "0").iterdir())).size == (16, 16)
    for args, words in (
        (["digits-cls", "--images", "10,2"], "images: digits-cls holds all 1,797"),
        (["digits-det", "--images", "10"], "images: give TRAIN,VAL or TRAIN,VAL,TEST"),
        (["digits-det", "--images", "10,0"], "TRAIN and VAL need at least 1"),
        (["digits-det", "--images", "a,b"], "images: 'a,b' is not TRAIN,VAL[,TEST]"),
        (["digits-det", "--seed", "-1"], "seed: -1 is negative"),
        (["digits-det", "--imgsz", "16"], "imgsz: a digits-det canvas of 16 px is outside 24..2048"),
        (["digits-cls", "--imgsz", "4"], "imgsz: 4 px is outside 8..1024"),
    ):
        out = tmp_path / "bad"
        res = run(app, ["datasets", "make", args[0], str(out), *args[1:]])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, (args, res.stderr)
        assert not out.exists()
