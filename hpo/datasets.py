"""Built-in demo datasets from the real UCI handwritten digits shipped in scikit-learn.

``sklearn.datasets.load_digits()`` holds 1,797 real 8x8 grey images of the digits 0-9 (UCI
"Optical Recognition of Handwritten Digits"), inside the scikit-learn wheel, so these builders
work offline. Both are deterministic for a given ``seed``.

- ``digits-cls``: an Ultralytics image-folder classification set ``DIR/{train,val,test}/<digit>/*.png``.
- ``digits-det``: a detection set: several digits pasted onto larger canvases, YOLO labels from
  their known positions, and ``DIR/data.yaml`` (``path: .``, i.e. the YAML's own folder) with
  ``train``, ``val`` and ``test`` splits.

Both hold a test split that no trial validates on, for the final model (:mod:`hpo.final`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["DATASETS", "make_dataset", "make_digits_cls", "make_digits_det", "require_dataset_libraries"]


def require_dataset_libraries(feature: str = "the demo datasets") -> None:
    """Fail before anything is written unless Pillow and scikit-learn (the ``yolo`` extra) are installed.

    Args:
        feature: what needs them, for the message (e.g. ``"hpo datasets make"``).

    Raises:
        hpo.extras.MissingExtra: ``PIL`` or ``sklearn`` cannot be imported (exit 2).
    """
    from .extras import require

    require("PIL", "yolo", feature)
    require("sklearn", "yolo", feature)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images / 16.0 * 255.0, 0, 255).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    return images, d.target.astype(int)


def _check_dir(out: str | Path) -> Path:
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"DIR: '{out}' exists and is not empty; choose a new or empty folder")
    return out


def make_digits_cls(
    out: str | Path, *, seed: int = 0, imgsz: int = 32, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> Path:
    """Write the digits classification set.

    Args:
        out: target folder (created; must be new or empty).
        seed: seed of the train/val/test split.
        imgsz: side of the saved images in pixels (8x8 digits upscaled, bilinear).
        val_fraction: share of the 1,797 images in ``val/`` (default 0.2).
        test_fraction: share in ``test/`` (default 0.2; 0: no test split). The defaults give
            1,079 train / 359 val / 359 test images.

    Returns:
        The folder, to pass as ``data=`` for a ``-cls`` model.

    Raises:
        ConfigError: ``out`` is a non-empty folder, ``imgsz`` is outside 8..1024, ``val_fraction`` is not in (0, 1),
            ``test_fraction`` not in [0, 1), or together they leave no training image.
    """
    from PIL import Image

    if not 8 <= imgsz <= 1024:
        raise ConfigError(f"imgsz: {imgsz} px is outside 8..1024 (the digits are 8x8 px upscaled)")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction: {val_fraction} must be in (0, 1)")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"test_fraction: {test_fraction} must be in [0, 1) and leave training images beside val_fraction {val_fraction}"
        )
    out = _check_dir(out)
    images, labels = _digits()
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * val_fraction))
    n_test = int(round(len(images) * test_fraction))
    for rank, i in enumerate(order):
        split = "val" if rank < n_val else ("test" if rank < n_val + n_test else "train")
        folder = out / split / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(images[i], mode="L").resize((imgsz, imgsz), Image.Resampling.BILINEAR).convert("RGB")
        img.save(folder / f"{i:04d}.png")
    return out


def make_digits_det(
    out: str | Path,
    *,
    seed: int = 0,
    n_train: int = 64,
    n_val: int = 16,
    n_test: int = 16,
    canvas: int = 96,
    digits_per_image: tuple[int, int] = (2, 4),
    digit_size: tuple[int, int] = (16, 32),
) -> Path:
    """Write the digits detection set with ``data.yaml``.

    Each canvas (``canvas`` x ``canvas`` px, dark noisy background) receives between
    ``digits_per_image`` digits, each upscaled to a random side within ``digit_size`` px and pasted
    without overlap; the YOLO label is the tight box of the digit's ink at its known position.

    Args:
        out: target folder (created; must be new or empty).
        seed: seed of every random choice.
        n_train, n_val, n_test: number of train, val and test canvases (``n_test=0``: no test
            split). The test canvases are drawn after the others, so a seed's train and val
            canvases do not depend on ``n_test``.
        canvas: canvas side in pixels.
        digits_per_image: inclusive (min, max) digits per canvas.
        digit_size: inclusive (min, max) pasted digit side in pixels.

    Returns:
        The path of ``data.yaml`` (``path: .``, 10 classes named "0".."9").

    Raises:
        ConfigError: ``out`` is a non-empty folder or a count/size is out of range.
    """
    import yaml
    from PIL import Image

    if n_train < 1 or n_val < 1 or n_test < 0:
        raise ConfigError("n_train/n_val/n_test: n_train and n_val must be >= 1, n_test >= 0")
    if digit_size[1] * 2 > canvas:
        raise ConfigError(f"canvas: {canvas} px is too small for digits of up to {digit_size[1]} px")
    out = _check_dir(out)
    images, labels = _digits()
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        if count == 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            bg = rng.integers(0, 40, size=(canvas, canvas), dtype=np.uint8)
            boxes: list[tuple[int, int, int, int]] = []
            rows = []
            for _ in range(int(rng.integers(digits_per_image[0], digits_per_image[1] + 1))):
                i = int(rng.integers(len(images)))
                side = int(rng.integers(digit_size[0], digit_size[1] + 1))
                glyph = np.asarray(Image.fromarray(images[i], mode="L").resize((side, side), Image.Resampling.BILINEAR))
                for _attempt in range(50):
                    x, y = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
                    if all(x + side <= bx or bx + bs <= x or y + side <= by or by + bs <= y for bx, by, bs, _ in boxes):
                        break
                else:
                    continue  # no free spot; skip this digit
                boxes.append((x, y, side, i))
                region = bg[y : y + side, x : x + side]
                np.maximum(region, glyph, out=region)
                ys, xs = np.nonzero(glyph > 48)
                if len(xs) == 0:
                    continue
                x0, x1, y0, y1 = x + xs.min(), x + xs.max() + 1, y + ys.min(), y + ys.max() + 1
                cx, cy = (x0 + x1) / 2 / canvas, (y0 + y1) / 2 / canvas
                w, h = (x1 - x0) / canvas, (y1 - y0) / canvas
                rows.append(f"{labels[i]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            Image.fromarray(bg, mode="L").convert("RGB").save(out / "images" / split / f"{split}_{n:04d}.png")
            (out / "labels" / split / f"{split}_{n:04d}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    data = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        **({"test": "images/test"} if n_test else {}),
        "names": {k: str(k) for k in range(10)},
    }
    header = "# digits-det: real UCI handwritten digits (scikit-learn) pasted on canvases; made by `hpo datasets make`\n"
    (out / "data.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


#: Builders by name, as used by ``hpo datasets make NAME DIR``.
DATASETS: dict[str, Callable[..., Path]] = {"digits-cls": make_digits_cls, "digits-det": make_digits_det}


def make_dataset(
    name: str, out: str | Path, *, seed: int = 0, imgsz: int | None = None, images: Sequence[int] | None = None
) -> Path:
    """Build the named demo dataset; returns what to pass as ``data=``.

    Args:
        name: ``digits-cls`` or ``digits-det``.
        out: target folder (new or empty).
        seed: seed of every random choice.
        imgsz: side in pixels of digits-cls's images (default 32, 8..1024) or of digits-det's
            canvases (default 96, 24..2048; its digits then span imgsz/6 to imgsz/3 px, as the
            default's 16-32 px); ``None``: the default.
        images: digits-det only: canvases per split, ``(train, val)`` or ``(train, val, test)``
            (default 64, 16, 16; a test count of 0: no test split). digits-cls always holds all
            1,797 UCI digits (60/20/20).

    Raises:
        ConfigError: unknown ``name`` (listing the known ones), a negative ``seed``, ``images`` for
            digits-cls or not 2-3 counts, a size out of range, or unusable ``out``; nothing is written.
    """
    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown '{name}'; choose one of {', '.join(DATASETS)}")
    if seed < 0:
        raise ConfigError(f"seed: {seed} is negative; give a whole number 0 or more")
    kwargs: dict[str, Any] = {"seed": seed}
    if images is not None:
        if name != "digits-det":
            raise ConfigError(f"images: {name} holds all 1,797 UCI digits (60/20/20); --images is for digits-det")
        if len(images) not in (2, 3):
            raise ConfigError(f"images: give TRAIN,VAL or TRAIN,VAL,TEST canvas counts, e.g. 256,64,64 (got {len(images)})")
        if min(images[:2]) < 1 or min(images) < 0:
            raise ConfigError(f"images: {','.join(map(str, images))}: TRAIN and VAL need at least 1 canvas, TEST 0 or more")
        kwargs.update(zip(("n_train", "n_val", "n_test"), images, strict=False))
    if imgsz is not None and name == "digits-cls":
        kwargs["imgsz"] = imgsz
    elif imgsz is not None:
        if not 24 <= imgsz <= 2048:
            raise ConfigError(f"imgsz: a digits-det canvas of {imgsz} px is outside 24..2048")
        kwargs.update(canvas=imgsz, digit_size=(imgsz // 6, imgsz // 3))  # the default 96 px: 16-32 px digits
    return DATASETS[name](out, **kwargs)
