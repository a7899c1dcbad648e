"""Dataset resolution: turn the user's ``data`` into absolute paths before any trial starts.

Ultralytics resolves a relative ``path:`` in a data YAML against its global datasets directory
(``settings.datasets_dir``) and may *download* a dataset it does not find. hpo does neither: a
relative or absent ``path`` means the YAML file's own folder (how Ultralytics' COCO8 ``data.yaml``
with ``path: .`` is meant, ``tests/data/coco8``), every split must exist, and the ``download`` key is dropped. The
resolved YAML is written into the study directory and given to every trial, so trials work from
any working directory (a Ray worker, a KFP pod).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DataError

__all__ = ["ResolvedData", "resolve_data", "cache_warnings"]

_SPLITS = ("train", "val", "test", "minival")


@dataclass(frozen=True)
class ResolvedData:
    """A dataset with every path absolute.

    Attributes:
        source: the absolute path the user gave (YAML file or folder).
        kind: ``"yaml"`` (detect/segment/pose/obb) or ``"folder"`` (classification image folder).
        content: for ``"yaml"``, the data YAML's mapping with ``path`` and every split absolute
            and ``download`` removed; for ``"folder"``, empty.
    """

    source: str
    kind: str
    content: dict[str, Any] = field(default_factory=dict)

    def write(self, study_dir: Path) -> str:
        """Write the resolved YAML into ``study_dir`` (atomically); return what trials pass as ``data=``."""
        if self.kind == "folder":
            return self.source
        from .study import atomic_write_text

        path = Path(study_dir) / "data.yaml"
        atomic_write_text(path, yaml.safe_dump(self.content, sort_keys=False))
        return str(path)


def resolve_data(data: str | Path, task: str) -> ResolvedData:
    """Check the dataset and make all of its paths absolute.

    Args:
        data: a data YAML (detect, segment, pose, obb) or, for ``classify``, an image folder with
            ``train/`` and ``val/`` (or ``test/``) sub-folders of one folder per class.
            A relative path is taken from the current working directory.
        task: the Ultralytics task (``detect``, ``classify``, ...).

    Returns:
        :class:`ResolvedData`.

    Raises:
        DataError: the file or folder is missing or unreadable, a split folder/file is missing,
            the YAML has no ``names``, a classification folder lacks ``train/``, or the train or
            val split holds no image Ultralytics loads (``IMG_FORMATS``; for classification, in
            no class folder).
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
                _check_class_split(p / split)
            return ResolvedData(str(p), "folder")
        raise DataError(f"data: '{data}' is a file; a classification dataset is a folder with train/ and val/")
    if p.is_dir():
        hint = f" (found {p / 'data.yaml'})" if (p / "data.yaml").is_file() else ""
        raise DataError(f"data: '{data}' is a folder; for task '{task}' give its data YAML{hint}")
    try:
        with open(p, encoding="utf-8") as f:
            content = yaml.safe_load(f)
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
    for split in ("train", "val"):
        entries = content[split] if isinstance(content[split], list) else [content[split]]
        if not any(_first_image(Path(e)) for e in entries):
            raise DataError(
                f"data: {split} '{content[split]}' in '{p}' holds no images ({', '.join(sorted(_formats()))}); "
                f"put the {split} images there or point '{split}' at the folder or .txt list that holds them"
            )
    return ResolvedData(str(p), "yaml", content)


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


def cache_warnings(data: ResolvedData) -> list[str]:
    """One warning per split whose Ultralytics cache cannot be written and does not exist yet.

    Ultralytics saves what it learns from scanning a split (labels, image checks) in a ``.cache``
    file beside it: ``labels/<split>.cache`` for a data YAML (beside the ``labels/`` folder its
    ``img2label_paths`` derives from ``images/``), ``<split>.cache`` beside a classification split.
    On a read-only volume (``os.access(..., W_OK)`` false, Ultralytics' own ``is_dir_writeable``
    test) it cannot save it, so every trial rescans every label: slow for a large dataset.
    """
    splits: list[tuple[str, Path]] = []
    if data.kind == "folder":
        root = Path(data.source)
        splits = [(s, root / s) for s in ("train", "val", "test") if (root / s).is_dir()][:2]
    else:
        for split in ("train", "val"):
            entry = data.content.get(split)
            for item in entry if isinstance(entry, list) else [entry]:
                image = _first_image(Path(item)) if item else None
                if image is None:
                    continue
                sep_images, sep_labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
                label = sep_labels.join(str(image).rsplit(sep_images, 1))
                splits.append((split, Path(label).parent))
                break
    out = []
    for split, folder in splits:
        cache = folder.with_suffix(".cache")
        if cache.parent.is_dir() and not cache.exists() and not os.access(cache.parent, os.W_OK):
            out.append(
                f"data: '{cache.parent}' is read-only, so Ultralytics cannot save {cache.name} and rescans the {split} "
                "labels in every trial; mount the dataset read-write once to let the cache be written, or copy it to a writable volume"
            )
    return out
