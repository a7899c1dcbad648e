"""Dataset resolution: turn the user's ``data`` into absolute paths before any trial starts.

Ultralytics resolves a relative ``path:`` in a data YAML against its global datasets directory
(``settings.datasets_dir``) and may *download* a dataset it does not find. hpo does neither: a
relative or absent ``path`` means the YAML file's own folder (how Ultralytics' COCO8 ``data.yaml``
with ``path: .`` is meant, ``tests/data/coco8``), every split must exist, and the ``download`` key is dropped. The
resolved YAML is written into the study directory and given to every trial, so trials work from
any working directory (a Ray worker, a KFP pod).
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._yaml import DuplicateKeyError
from ._yaml import safe_load as _safe_load
from .errors import DataError

__all__ = ["ResolvedData", "resolve_data", "cache_warnings", "test_split", "CLS_VAL_FOLDERS"]

_SPLITS = ("train", "val", "test", "minival")
#: The folders Ultralytics' ``check_cls_dataset`` takes, in this order, as a classification folder's
#: validation split (Ultralytics 8.4, ``ultralytics/data/utils.py``); without any of them it
#: validates on ``test/``, which is then no test split.
CLS_VAL_FOLDERS = ("val", "validation", "valid")


@dataclass(frozen=True)
class ResolvedData:
    """A dataset with every path absolute.

    Attributes:
        source: the absolute path the user gave (YAML file or folder).
        kind: ``"yaml"`` (detect/segment/pose/obb) or ``"folder"`` (classification image folder).
        content: for ``"yaml"``, the data YAML's mapping with ``path`` and every split absolute
            and ``download`` removed; for ``"folder"``, empty.
        classes: for ``"folder"``, the class names as Ultralytics reads them: the sub-folders of
            ``train/``, sorted (torchvision's ``ImageFolder.find_classes``, which Ultralytics'
            ``ClassificationDataset`` uses); empty for ``"yaml"`` (its ``names`` are in ``content``).
    """

    source: str
    kind: str
    content: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    def write(self, study_dir: Path) -> str:
        """Write the resolved YAML into ``study_dir`` (atomically); return what trials pass as ``data=``."""
        if self.kind == "folder":
            return self.source
        from .files import atomic_write_text

        path = Path(study_dir) / "data.yaml"
        atomic_write_text(path, yaml.safe_dump(self.content, sort_keys=False))
        return str(path)


def resolve_data(data: str | Path, task: str, *, single_cls: bool = False) -> ResolvedData:
    """Check the dataset and make all of its paths absolute.

    Args:
        data: a data YAML (detect, segment, pose, obb) or, for ``classify``, an image folder with
            ``train/`` and ``val/`` (or ``test/``) sub-folders of one folder per class.
            A relative path is taken from the current working directory.
        task: the Ultralytics task (``detect``, ``classify``, ...).
        single_cls: the train arg ``single_cls=True`` (every label becomes class 0, so label
            class ids are not checked against ``names``).

    Returns:
        :class:`ResolvedData`.

    Raises:
        DataError: the file or folder is missing or unreadable, a split folder/file is missing,
            the YAML repeats a key or has no ``names``, ``names`` is not numbered ``0..n-1``, a
            classification folder lacks ``train/``, the train or val split holds no image
            Ultralytics loads (``IMG_FORMATS``; for classification, in no class folder), a split
            folder holds a symbolic link to a folder that contains it (:func:`_walk_images`), or a
            train/val label names a class id outside ``0..nc-1`` (:func:`_check_label_classes`).
    """
    p = Path(str(data)).expanduser()
    if not p.exists():
        raise DataError(
            f"data: '{data}' does not exist (resolved to {p.resolve()}); give the data YAML or dataset folder on the volume"
        )
    p = p.resolve()
    if task == "classify":
        if p.is_dir():
            if not (p / "train").is_dir():
                raise DataError(f"data: classification folder '{p}' has no train/ sub-folder")
            if not ((p / "val").is_dir() or (p / "test").is_dir()):
                raise DataError(f"data: classification folder '{p}' has neither val/ nor test/")
            for split in ("train", "val" if (p / "val").is_dir() else "test"):
                _walk_images(p / split)  # a symlink loop first: torchvision's ImageFolder would follow it
                _check_class_split(p / split)
            classes = sorted(e.name for e in os.scandir(p / "train") if e.is_dir())
            return ResolvedData(str(p), "folder", classes=classes)
        raise DataError(f"data: '{data}' is a file; a classification dataset is a folder with train/ and val/")
    if p.is_dir():
        hint = f" (found {p / 'data.yaml'})" if (p / "data.yaml").is_file() else ""
        raise DataError(f"data: '{data}' is a folder; for task '{task}' give its data YAML{hint}")
    try:
        with open(p, encoding="utf-8") as f:
            content = _safe_load(f)
    except DuplicateKeyError as e:
        raise DataError(
            f"data: '{p}' repeats the key {e.key!r} at line {e.line} (first at line {e.first_line}); "
            "the last value would silently replace the first: keep one"
        ) from None
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"data: cannot read '{p}': {str(e).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise DataError(f"data: '{p}' is not a data YAML mapping (expected keys path, train, val, names)")
    if "names" not in content and "nc" not in content:
        raise DataError(f"data: '{p}' has no 'names'; list the class names")
    base = Path(str(content.get("path") or ".")).expanduser()
    if not base.is_absolute():
        base = (p.parent / base).resolve()
    if not base.is_dir():
        raise DataError(f"data: 'path: {content.get('path')}' in '{p}' resolves to {base}, which does not exist")
    content = dict(content)
    content["path"] = str(base)
    content.pop("download", None)  # never download: the data must be on the volume
    if "train" not in content or "val" not in content:
        raise DataError(f"data: '{p}' needs both 'train' and 'val' entries")
    for split in _SPLITS:
        if content.get(split) in (None, ""):
            content.pop(split, None)
            continue
        entries = content[split] if isinstance(content[split], list) else [content[split]]
        resolved = []
        for entry in entries:
            q = Path(str(entry)).expanduser()
            q = q if q.is_absolute() else (base / q)
            if not q.exists():
                raise DataError(f"data: {split} '{entry}' in '{p}' resolves to {q}, which does not exist")
            resolved.append(str(q.resolve()))
        content[split] = resolved if isinstance(content[split], list) else resolved[0]
    images: dict[str, list[str]] = {}
    for split in ("train", "val"):
        entries = content[split] if isinstance(content[split], list) else [content[split]]
        images[split] = [f for e in entries for f in _walk_images(Path(e))]
        if not images[split]:
            raise DataError(
                f"data: {split} '{content[split]}' in '{p}' holds no images ({', '.join(sorted(_formats()))}); "
                f"put the {split} images there or point '{split}' at the folder or .txt list that holds them"
            )
    nc = _class_count(content, p)
    if not single_cls:
        _check_label_classes(images, nc, p)
    return ResolvedData(str(p), "yaml", content)


def test_split(data: ResolvedData) -> str | None:
    """``"test"`` when the dataset has a test split that no trial validates on, else ``None``.

    A data YAML's ``test:`` entry (every path of it exists: :func:`resolve_data`); a classification
    folder's ``test/`` beside a validation folder (:data:`CLS_VAL_FOLDERS`): without one, Ultralytics
    validates every training on ``test/`` (``check_cls_dataset``), so it is the validation split
    and there is no test split.

    Raises:
        DataError: the test split holds no image Ultralytics loads (for classification, in no class folder).
    """
    if data.kind == "folder":
        root = Path(data.source)
        if not (root / "test").is_dir() or not any((root / v).is_dir() for v in CLS_VAL_FOLDERS):
            return None
        _check_class_split(root / "test")
        return "test"
    entry = data.content.get("test")
    if not entry:
        return None
    entries = entry if isinstance(entry, list) else [entry]
    if not any(_walk_images(Path(e)) for e in entries):
        raise DataError(
            f"data: test '{entry}' in '{data.source}' holds no images ({', '.join(sorted(_formats()))}); put the test "
            "images there, or remove 'test:' to score the final model on the validation split"
        )
    return "test"


def _formats() -> frozenset[str]:
    from .ultra import image_formats

    return image_formats()


def _first_image(entry: Path) -> Path | None:
    """The first image Ultralytics would load from a split entry (a folder, searched recursively
    as its ``glob('**/*.*')`` does; a ``.txt`` list of image paths; or one image file), else ``None``."""
    formats = _formats()
    if entry.is_dir():
        for root, _dirs, files in os.walk(entry, followlinks=True):
            for name in files:
                if name.rpartition(".")[-1].lower() in formats:
                    return Path(root) / name
        return None
    if entry.suffix.lower() == ".txt":
        try:
            with open(entry, encoding="utf-8-sig") as f:
                for line in f:
                    line = line.strip()
                    if line and line.rpartition(".")[-1].lower() in formats:
                        return Path(line)
        except (OSError, UnicodeDecodeError):
            return None
        return None
    return entry if entry.suffix[1:].lower() in formats else None


def _walk_images(entry: Path) -> list[str]:
    """The image files Ultralytics loads from one split entry: a folder (searched recursively,
    following links, as its ``glob('**/*.*')`` and torchvision's ``ImageFolder`` do; hidden names
    skipped, as ``glob`` skips them), a ``.txt`` list of image paths (``./`` relative to the list),
    or one image file.

    Raises:
        DataError: the folder holds a symbolic link to a folder that contains it (``ln -s .. loop``):
            Ultralytics would walk the same images again and again (57,482 "images" for 1,402 in a
            classification folder, every one under the link's class).
    """
    formats = _formats()
    if entry.is_dir():
        out = []
        for root, dirs, files in os.walk(entry, followlinks=True):
            here = os.path.realpath(root)
            for d in dirs:
                link = os.path.join(root, d)
                if os.path.islink(link):
                    target = os.path.realpath(link)
                    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
                        raise DataError(
                            f"data: '{link}' is a symbolic link to '{target}', a folder that contains it: Ultralytics "
                            "would follow it round and round (the same images counted again and again, under the "
                            "link's class); remove the link"
                        )
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out += [os.path.join(root, f) for f in files if not f.startswith(".") and f.rpartition(".")[-1].lower() in formats]
        return sorted(out)
    if entry.suffix.lower() == ".txt":
        try:
            with open(entry, encoding="utf-8-sig") as f:
                lines = [x.strip() for x in f.read().strip().splitlines()]
        except (OSError, UnicodeDecodeError):
            return []
        parent = str(entry.parent) + os.sep
        return [
            x.replace("./", parent, 1) if x.startswith("./") else x for x in lines if x.rpartition(".")[-1].lower() in formats
        ]
    return [str(entry)] if entry.suffix[1:].lower() in formats else []


def _label_file(image: str) -> str:
    """The label file Ultralytics reads for an image (``ultralytics.data.utils.img2label_paths``: the
    last ``/images/`` becomes ``/labels/``, the suffix ``.txt``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def _class_count(content: dict[str, Any], source: Path) -> int:
    """``nc`` as Ultralytics' ``check_det_dataset`` derives it: ``len(names)`` when ``names`` is
    given (numbered ``0..n-1``: ``check_class_names``), else ``nc``.

    Raises:
        DataError: ``names`` is not a list or a mapping numbered ``0..n-1``, or ``nc`` is not a whole number.
    """
    names, nc = content.get("names"), content.get("nc")
    if nc is not None:
        try:
            number = float(nc)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(nc, bool) or not number.is_integer() or number < 1:
            raise DataError(f"data: 'nc: {nc}' in '{source}' must be a whole number of classes >= 1; or list them in 'names'")
        if names is not None and isinstance(names, (list, dict)) and len(names) != int(number):
            raise DataError(
                f"data: 'names' in '{source}' lists {len(names)} classes but 'nc: {nc}' says {int(number)}; make them agree (or drop nc)"
            )
    if names is None:
        return int(number)
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            ids = []
        if ids != list(range(len(names))):
            raise DataError(
                f"data: 'names' in '{source}' must be numbered 0..{len(names) - 1} ({len(names)} classes), got ids "
                f"{', '.join(map(str, list(names)[:6]))}{', ...' if len(names) > 6 else ''}; number the classes from 0 without gaps"
            )
        return len(names)
    if isinstance(names, list):
        return len(names)
    raise DataError(f"data: 'names' in '{source}' must be a list or a mapping of class id to name")


def _bad_class_lines(labels: list[str], nc: int) -> tuple[int, int, tuple[str, int, int | float] | None]:
    """``(lines, files, first)``: label lines of ``labels`` whose class id is outside ``0..nc-1``, the
    files holding them, and the first as ``(file, line, id)``. A missing or unreadable file is skipped."""
    lines = files = 0
    first: tuple[str, int, int | float] | None = None
    for label in labels:
        try:
            with open(label, "rb") as f:
                text = f.read()
        except OSError:
            continue
        bad = 0
        for n, line in enumerate(text.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):  # utf-8-sig, as Ultralytics reads
            head = line.split(None, 1)
            if not head:
                continue
            try:
                value = float(head[0])
            except ValueError:
                continue
            if value < 0 or value >= nc:
                bad += 1
                if first is None:
                    first = (label, n, int(value) if value.is_integer() else value)
        if bad:
            lines, files = lines + bad, files + 1
    return lines, files, first


def _check_label_classes(images: dict[str, list[str]], nc: int, source: Path) -> None:
    """Every class id in the train and val label files lies in ``0..nc-1``.

    Ultralytics (``verify_image_label``) drops an image whose label names a class ``>= nc`` as corrupt,
    silently in a trial's log, and every trial fails with "No valid images found" when all are
    dropped. Reads each image's label file once (:func:`_label_file`), 8 threads over chunks of
    1,024 files: on a 2-core CPU, local disk, the whole :func:`resolve_data` of 5,000 labels took
    0.33-0.38 s with the page cache dropped and 0.12-0.17 s cached, of 55,000 labels 3.6-4.0 s and
    0.8-0.9 s (one thread: 12-13 s uncached). A missing or unreadable label file is left to
    Ultralytics, as are lines it would refuse for other reasons.

    Raises:
        DataError: naming the first such file, its line and class id, ``nc``, how many lines in how many files, and the fix.
    """
    from concurrent.futures import ThreadPoolExecutor

    for split, found in images.items():
        labels = [_label_file(image) for image in found]
        chunks = [labels[i : i + 1024] for i in range(0, len(labels), 1024)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda chunk: _bad_class_lines(chunk, nc), chunks))
        lines, files = sum(r[0] for r in results), sum(r[1] for r in results)
        first = next((r[2] for r in results if r[2] is not None), None)
        if first is not None:
            label, n, value = first
            more = f" ({lines} such lines in {files} label files)" if lines > 1 else ""
            raise DataError(
                f"data: {split} label '{label}' line {n} has class {value}, but '{source}' names {nc} "
                f"{'class (id 0)' if nc == 1 else f'classes (ids 0-{nc - 1})'}{more}: Ultralytics would drop those "
                "images; fix the labels or list every class in 'names'"
            )


def _check_class_split(split: Path) -> None:
    """A classification split needs an image in at least one class folder (Ultralytics reads it with
    torchvision's ``ImageFolder(allow_empty=True)``: images outside class folders are ignored)."""
    classes = sorted(d for d in split.iterdir() if d.is_dir())
    if not classes:
        raise DataError(
            f"data: classification split '{split}' has no class folders; put the images in one folder per class ({split}/<class>/*.jpg)"
        )
    if not any(_first_image(d) for d in classes):
        shown = ", ".join(d.name for d in classes[:3]) + (", ..." if len(classes) > 3 else "")
        raise DataError(
            f"data: classification split '{split}' has no images in its {len(classes)} class folders ({shown}); "
            f"add images ({', '.join(sorted(_formats()))}) to {split}/<class>/"
        )


def _image_folder_files(split_dir: Path) -> list[str]:
    """The sample paths and class names of a classification split, as Ultralytics'
    ``ClassificationDataset`` gets them from torchvision's ``ImageFolder`` (``find_classes`` and
    ``make_dataset`` of ``torchvision/datasets/folder.py``, with Ultralytics' ``is_valid_file``):
    class folders sorted, each walked following links, sorted, files sorted. Done here because
    importing ``torchvision.datasets`` costs the driver 3.5 s; ``tests/test_ultra.py`` checks it
    against ``ImageFolder`` itself."""
    formats = _formats()
    root = os.path.expanduser(split_dir)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    samples = []
    for name in classes:
        for folder, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            samples += [os.path.join(folder, f) for f in sorted(files) if f.rpartition(".")[-1].lower() in formats]
    return samples + classes


def _ultralytics_hashed_files(kind: str, split_dir: Path | None, entries: list[str]) -> list[str]:
    """The paths Ultralytics hashes into a split's ``.cache`` (``get_hash``), training with
    ``fraction=1``: a classification split's samples and class names (``ClassificationDataset``,
    :func:`_image_folder_files`); a YAML split's label files and images (``YOLODataset.get_labels``
    over ``BaseDataset.get_img_files``: ``glob('**/*.*')`` or a ``.txt`` list, sorted)."""
    from ultralytics.data.utils import img2label_paths

    if kind == "folder" and split_dir is not None:
        return _image_folder_files(split_dir)
    formats = _formats()
    found: list[str] = []
    for entry in entries:
        q = Path(entry)
        if q.is_dir():
            found += glob.glob(str(Path(glob.escape(str(q))) / "**" / "*.*"), recursive=True)
        elif q.is_file():
            with open(q, encoding="utf-8-sig") as t:
                lines = t.read().strip().splitlines()
            parent = str(q.parent) + os.sep
            found += [x.replace("./", parent, 1) if x.startswith("./") else x for x in lines]
    images: list[str | Path] = sorted(x.replace("/", os.sep) for x in found if x.rpartition(".")[-1].lower() in formats)
    return img2label_paths(images) + [str(x) for x in images]


def _stale_cache(cache: Path, hashed: list[str]) -> str | None:
    """Why Ultralytics would not use ``cache`` (and rescan the split), or ``None`` when it would:
    its own checks (``load_dataset_cache_file``; ``version == DATASET_CACHE_VERSION``; ``hash ==
    get_hash(...)`` over the files' paths, sizes and modification times)."""
    from ultralytics.data.utils import get_hash, load_dataset_cache_file

    from .ultra import dataset_cache_version

    try:
        found = load_dataset_cache_file(cache)
    except Exception:  # noqa: BLE001 - any unreadable cache (empty, truncated, not a pickle) is rescanned
        return "it is unreadable"
    version = found.get("version") if isinstance(found, dict) else None
    if version != dataset_cache_version():
        return f"it is cache version {version}, this Ultralytics reads {dataset_cache_version()}"
    if found.get("hash") != get_hash(hashed):
        return "it lists other files: the dataset was moved, copied or changed since it was written"
    return None


def cache_warnings(data: ResolvedData) -> list[str]:
    """One warning per split whose Ultralytics cache cannot be written and is missing or stale.

    Ultralytics saves what it learns from scanning a split (labels, image checks) in a ``.cache``
    file beside it: ``labels/<split>.cache`` for a data YAML (beside the ``labels/`` folder its
    ``img2label_paths`` derives from ``images/``), ``<split>.cache`` beside a classification split.
    On a read-only volume (``os.access(..., W_OK)`` false, Ultralytics' own ``is_dir_writeable``
    test) it cannot save it, so every trial rescans every label: slow for a large dataset. That
    also holds when a cache is there but Ultralytics would not use it (:func:`_stale_cache`): one
    copied with the dataset, or written at another mount path, hashes other paths or times
    (Ultralytics then says "cache not saved" in every trial's log only). Imports Ultralytics
    (and torchvision) to check an existing cache on a read-only volume, with its own functions.
    """
    splits: list[tuple[str, Path, Path | None, list[str]]] = []  # split, cache, classification folder, YAML entries
    if data.kind == "folder":
        root = Path(data.source)
        for split in [s for s in ("train", "val", "test") if (root / s).is_dir()][:2]:
            splits.append((split, (root / split).with_suffix(".cache"), root / split, []))
    else:
        for split in ("train", "val"):
            entry = data.content.get(split)
            entries = [str(e) for e in (entry if isinstance(entry, list) else [entry]) if e]
            first = next((i for e in entries if (i := _first_image(Path(e))) is not None), None)
            if first is not None:  # the labels folder beside the split's images
                splits.append((split, Path(_label_file(str(first))).parent.with_suffix(".cache"), None, entries))
    found: dict[tuple[Path, str], list[tuple[str, str]]] = {}  # (folder, stale reason) -> [(split, cache name)]
    for split, cache, folder, entries in splits:
        if not cache.parent.is_dir() or os.access(cache.parent, os.W_OK):
            continue  # Ultralytics writes (or rewrites) the cache itself
        hashed = _ultralytics_hashed_files(data.kind, folder, entries) if cache.exists() or not folder else []
        if not folder and hashed:  # exactly where Ultralytics looks: Path(label_files[0]).parent.with_suffix(".cache")
            cache = Path(hashed[0]).parent.with_suffix(".cache")
        stale = _stale_cache(cache, hashed) if cache.exists() else ""
        if stale is not None:
            found.setdefault((cache.parent, stale), []).append((split, cache.name))
    out = []
    for (parent, stale), items in found.items():
        names = " and ".join(name for _, name in items)
        splits_named = " and ".join(split for split, _ in items)
        why = f"cannot replace its stale {names} ({stale})" if stale else f"cannot save {names}"
        out.append(
            f"data: '{parent}' is read-only, so Ultralytics {why} and rescans the {splits_named} labels in every trial; "
            "mount the dataset read-write once to let the cache be written, or copy it to a writable volume"
        )
    return out
