"""Official pretrained weights, by choice: fetched once, before the first trial, into a stated folder.

hpo never downloads anything by itself. With the opt-in (``hpo tune --download-weights``,
``Tuner(download_weights=True)`` or the environment variable ``HPO_DOWNLOAD_WEIGHTS=1``), a model
given as the bare name of one of Ultralytics' official checkpoints (``yolov8n.pt``,
``yolo11n-cls.pt``, ...) that is not a local file is fetched by Ultralytics
(``attempt_download_asset``) into the weights folder (default ``<output>/pretrained``, on the
volume in KFP) and every trial then loads that local file; a second study finds it there. Offline,
the opt-in fails at once, with one line, before the study directory is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

__all__ = ["ENV", "wants_download", "is_official_name", "fetch_pretrained"]

#: Environment variable of the opt-in (``1``/``true``/``yes``/``on``).
ENV = "HPO_DOWNLOAD_WEIGHTS"


def wants_download(flag: bool | None) -> bool:
    """The opt-in: ``flag`` if given, else the environment variable :data:`ENV`."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_official_name(model: str) -> bool:
    """``model`` is a bare ``.pt`` name (no folder) that is not a local file."""
    p = Path(model)
    return p.suffix == ".pt" and p.name == model and not p.is_file()


def fetch_pretrained(model: str, folder: str | os.PathLike) -> str:
    """Fetch Ultralytics' official checkpoint ``model`` into ``folder`` (once) and return its path.

    Args:
        model: bare name of an official checkpoint (``yolov8n.pt``).
        folder: where to keep it (created if needed).

    Returns:
        The local path (absolute) of the checkpoint.

    Raises:
        ConfigError: not an official name, the machine is offline, or the download failed (one
            line; nothing is left in ``folder``).
    """
    folder = Path(folder).expanduser().resolve()
    target = folder / model
    if target.is_file():
        return str(target)
    from ultralytics.utils import is_online
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    if model not in GITHUB_ASSETS_NAMES:
        raise ConfigError(
            f"model: '{model}' is not one of Ultralytics' official weights (e.g. yolov8n.pt, yolo11n-cls.pt); "
            "give the path of a local .pt"
        )
    if not is_online():
        raise ConfigError(
            f"model: cannot fetch '{model}' (download_weights is on): this machine is offline; "
            f"copy {model} into {folder} or pass the path of a local .pt"
        )
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(attempt_download_asset(target))
    except Exception as e:  # noqa: BLE001 - any download error is one line of bad input
        path = None
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    else:
        detail = "no file was written"
    if path is None or not path.is_file():
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise ConfigError(
            f"model: fetching '{model}' into {folder} failed ({detail}); check the network or pass the path of a local .pt"
        )
    import logging

    logging.getLogger("hpo.pretrained").info(f"fetched {model} into {path.parent}")
    return str(path.resolve())
