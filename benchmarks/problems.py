"""The protocol's datasets, built offline and deterministically, each with a train, val and TEST split.

The 1,797 real UCI handwritten digits inside scikit-learn are split once per problem, stratified
by class, into train / val / test shares (:attr:`ProblemSpec.split`, seed ``data_seed``):

- ``digits-cls``: an Ultralytics image-folder set ``DIR/{train,val,test}/<digit>/*.png``, each
  8x8 digit upscaled (bilinear) to ``imgsz`` px;
- ``digits-det``: canvases of ``imgsz`` px, each holding 1-2 digits pasted without overlap; the
  canvases of a split draw their digits from that split's share of the 1,797 only, so no digit
  image of the test split is ever seen by a trial, by Ultralytics' choice of ``best.pt`` or by a
  warm start; YOLO labels are the tight box of each digit's ink. ``data.yaml`` holds the absolute
  ``path`` (plain Ultralytics, e.g. ``model.tune``, resolves ``path: .`` against the working
  directory), ``train``, ``val`` and ``test``.

A pretraining set on other classes (:attr:`WarmStart.classes`) uses the train and val shares of
those digits; its classes are its own (``nc`` = their number), so a fine-tuned model whose
problem has another count rebuilds its classification head, as when users fine-tune a COCO
checkpoint on their own classes.

Each folder is written under a temporary name and renamed when complete, with ``build.json``
holding what was built and a digest of every file; an existing complete folder is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import ProblemSpec

__all__ = ["build_problem_data", "build_pretrain_data", "data_digest", "glyph_split"]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images / 16.0 * 255.0, 0, 255).astype(np.uint8)
    return images, d.target.astype(int)


def glyph_split(split: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Indices of the 1,797 digits in each of ``train``/``val``/``test``, stratified by class.

    Source: :func:`sklearn.model_selection.train_test_split` twice (test first, then val from the rest).
    """
    from sklearn.model_selection import train_test_split

    _, labels = _digits()
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=split[2], stratify=labels, random_state=seed)
    val_share = split[1] / (split[0] + split[1])
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def data_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (``build.json`` and Ultralytics' caches left out)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel == "build.json" or f.suffix == ".cache":
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _finish(tmp: Path, folder: Path, recipe: dict[str, Any]) -> None:
    (tmp / "build.json").write_text(json.dumps({"recipe": recipe, "digest": data_digest(tmp)}, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _reuse(folder: Path, recipe: dict[str, Any]) -> bool:
    marker = folder / "build.json"
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("recipe") == recipe


def _glyph(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image, mode="L").resize((side, side), Image.Resampling.BILINEAR))


def _canvases(
    out: Path,
    split: str,
    *,
    count: int,
    pool: np.ndarray,
    class_of: dict[int, int],
    canvas: int,
    digit_size: tuple[int, int],
    digits_per_image: tuple[int, int],
    rng: np.random.Generator,
) -> None:
    from PIL import Image

    images, labels = _digits()
    pool = np.asarray([i for i in pool if int(labels[i]) in class_of])
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        bg = rng.integers(0, 40, size=(canvas, canvas), dtype=np.uint8)
        boxes: list[tuple[int, int, int]] = []
        rows = []
        for _ in range(int(rng.integers(digits_per_image[0], digits_per_image[1] + 1))):
            i = int(pool[int(rng.integers(len(pool)))])
            side = int(rng.integers(digit_size[0], digit_size[1] + 1))
            glyph = _glyph(images[i], side)
            for _attempt in range(50):
                x, y = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
                if all(x + side <= bx or bx + bs <= x or y + side <= by or by + bs <= y for bx, by, bs in boxes):
                    break
            else:
                continue
            boxes.append((x, y, side))
            region = bg[y : y + side, x : x + side]
            np.maximum(region, glyph, out=region)
            ys, xs = np.nonzero(glyph > 48)
            if len(xs) == 0:
                continue
            x0, x1, y0, y1 = x + xs.min(), x + xs.max() + 1, y + ys.min(), y + ys.max() + 1
            rows.append(
                f"{class_of[int(labels[i])]} {(x0 + x1) / 2 / canvas:.6f} {(y0 + y1) / 2 / canvas:.6f} "
                f"{(x1 - x0) / canvas:.6f} {(y1 - y0) / canvas:.6f}"
            )
        Image.fromarray(bg, mode="L").convert("RGB").save(out / "images" / split / f"{split}_{n:05d}.png")
        (out / "labels" / split / f"{split}_{n:05d}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))


def _det_yaml(folder: Path, tmp: Path, digits: list[int], splits: list[str]) -> None:
    import yaml

    doc = {
        "path": str(folder.resolve()),
        **{s: f"images/{s}" for s in splits},
        "names": {k: str(d) for k, d in enumerate(digits)},
    }
    (tmp / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def build_problem_data(problem: ProblemSpec, folder: Path) -> str:
    """Build (or reuse) ``problem``'s dataset in ``folder``; returns the ``data=`` value.

    Returns:
        The folder (``digits-cls``) or its ``data.yaml`` (``digits-det``), absolute.
    """
    folder = Path(folder).resolve()
    recipe = {
        "dataset": problem.dataset,
        "split": list(problem.split),
        "data_seed": problem.data_seed,
        "digits": problem.digits,
        "imgsz": problem.imgsz,
        "images": dict(problem.images or {}),
        "digit_size": list(problem.digit_size),
        "digits_per_image": list(problem.digits_per_image),
        "version": 1,
    }
    result = str(folder) if problem.dataset == "digits-cls" else str(folder / "data.yaml")
    if _reuse(folder, recipe):
        return result
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pools = glyph_split(problem.split, problem.data_seed)
    if problem.dataset == "digits-cls":
        from PIL import Image

        images, labels = _digits()
        caps = problem.images or {}
        for split, idx in pools.items():
            kept: dict[int, int] = {}
            for i in idx:
                if int(labels[i]) not in problem.digits:
                    continue
                kept[int(labels[i])] = kept.get(int(labels[i]), 0) + 1
                if split in caps and kept[int(labels[i])] > caps[split]:
                    continue
                d = tmp / split / str(labels[i])
                d.mkdir(parents=True, exist_ok=True)
                img = Image.fromarray(images[i], mode="L").resize((problem.imgsz, problem.imgsz), Image.Resampling.BILINEAR)
                img.convert("RGB").save(d / f"{i:04d}.png")
    else:
        rng = np.random.default_rng(problem.data_seed)
        class_of = {d: k for k, d in enumerate(problem.digits)}
        assert problem.images is not None  # the schema requires it for digits-det
        counts: dict[str, int] = {str(k): int(v) for k, v in problem.images.items()}
        for split in ("train", "val", "test"):
            _canvases(
                tmp,
                split,
                count=counts[split],
                pool=pools[split],
                class_of=class_of,
                canvas=problem.imgsz,
                digit_size=problem.digit_size,
                digits_per_image=problem.digits_per_image,
                rng=rng,
            )
        _det_yaml(folder, tmp, problem.digits, ["train", "val", "test"])
    _finish(tmp, folder, recipe)
    return result


def build_pretrain_data(problem: ProblemSpec, folder: Path) -> str:
    """Build (or reuse) the canvases of ``problem.warm_start`` on its own classes; returns its ``data.yaml``.

    Train canvases draw from the train share of those digits, val canvases (a fifth as many) from
    the val share; no test split (the pretraining is not scored).
    """
    ws = problem.warm_start
    assert ws is not None and ws.classes is not None
    folder = Path(folder).resolve()
    n_train = ws.images or (problem.images or {}).get("train", 256)
    recipe = {
        "pretrain_classes": ws.classes,
        "split": list(problem.split),
        "data_seed": problem.data_seed,
        "imgsz": problem.imgsz,
        "images": n_train,
        "digit_size": list(problem.digit_size),
        "digits_per_image": list(problem.digits_per_image),
        "version": 1,
    }
    if _reuse(folder, recipe):
        return str(folder / "data.yaml")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pools = glyph_split(problem.split, problem.data_seed)
    rng = np.random.default_rng(problem.data_seed + 1)
    class_of = {d: k for k, d in enumerate(ws.classes)}
    for split, count in (("train", n_train), ("val", max(1, n_train // 5))):
        _canvases(
            tmp,
            split,
            count=count,
            pool=pools[split],
            class_of=class_of,
            canvas=problem.imgsz,
            digit_size=problem.digit_size,
            digits_per_image=problem.digits_per_image,
            rng=rng,
        )
    _det_yaml(folder, tmp, list(ws.classes), ["train", "val"])
    _finish(tmp, folder, recipe)
    return str(folder / "data.yaml")
