"""A SIGKILL while ``hpo plot`` draws never leaves a partial plot: every file of ``<study>/plots/``
is replaced by a rename (``os.replace``), so at any moment, kill or not, it is the previous whole
file or the new whole file. The study's trials are simulated (the plots are the point)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import hpo_cli

pytestmark = pytest.mark.slow

NAMES = ("history.png", "curves.png", "importance.json", "importance.png", "parallel.png", "slice.png", "report.html")
SIMULATED = {"HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_TRAINER_OPTIONS": "{}", "HPO_PLOTS": "0"}


def _complete(name: str, data: bytes) -> bool:
    """Whether ``data`` is a whole file of its kind (a PNG to its IEND chunk, JSON that parses, HTML to ``</html>``)."""
    if name.endswith(".png"):
        return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    if name.endswith(".json"):
        try:
            return bool(json.loads(data))
        except ValueError:
            return False
    return data.startswith(b"<!DOCTYPE html>") and data.rstrip().endswith(b"</html>")


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits_cls) -> Path:
    out = tmp_path_factory.mktemp("studies")
    r = hpo_cli(
        "tune",
        "--backend",
        "optuna",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(out),
        "--name",
        "p",
        "--iterations",
        "6",
        "--epochs",
        "3",
        "--space",
        json.dumps({"lr0": [1e-4, 1e-2], "momentum": [0.6, 0.98], "fliplr": [0.0, 0.5]}),
        "--seed",
        "0",
        "--pruner",
        "none",
        "imgsz=32",
        env=SIMULATED,
    )
    assert r.returncode == 0, r.stderr
    r = hpo_cli("plot", str(out / "p"))  # a good drawing to keep
    assert r.returncode == 0, r.stderr
    return out / "p"


def test_a_redraw_replaces_every_plot_file_by_a_rename(study):
    """By construction: a redraw gives every file a new inode (a temp file renamed over the old
    one); a file rewritten in place (truncated, then written: 0 bytes after a kill) keeps its inode."""
    plots = study / "plots"
    before = {n: _stat(plots / n) for n in NAMES}
    temps = set(plots.glob(".*"))  # a killed drawing's (another test's)
    assert all(before.values()), before
    r = hpo_cli("plot", str(study))
    assert r.returncode == 0, r.stderr
    for n in NAMES:
        after = _stat(plots / n)
        if n == "importance.json" and after == before[n]:
            continue  # kept as it was: it rests on the same records (importance.meta.json), nothing to redraw
        assert after is not None and after[0] != before[n][0], f"{n} was rewritten in place"
        assert _complete(n, (plots / n).read_bytes()), n
    assert set(plots.glob(".*")) == temps, "a drawing that finished left a temp file"


@pytest.mark.parametrize("target", ["history.png", "importance.json", "report.html"])
def test_sigkill_while_plotting_leaves_every_plot_whole(study, target):
    """``hpo plot`` is SIGKILLed the moment it starts writing ``target`` (its temp file appears, or
    the file itself changes); meanwhile every plot file is read whenever it changes. No partial
    file is ever seen, and after the kill every file is whole (the previous drawing's or the new one)."""
    plots = study / "plots"
    seen = {n: _stat(plots / n) for n in NAMES}
    assert all(seen.values()), seen  # the fixture's (or the previous test's) whole drawing
    stem = target.rsplit(".", 1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "plot", str(study)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    partial, killed = [], False
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            writing = any(f.startswith(f".{stem}.") for f in os.listdir(plots))
            for n in NAMES:
                now = _stat(plots / n)
                if now == seen[n]:
                    continue
                seen[n] = now
                data = (plots / n).read_bytes() if now else b""
                if not _complete(n, data):
                    partial.append(f"{n}: {len(data)} bytes")
                writing = writing or n == target
            if writing or partial:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
    finally:
        if proc.poll() is None and not killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert killed, f"hpo plot ended (exit {proc.returncode}) before it wrote {target}"
    assert proc.returncode == -signal.SIGKILL
    assert not partial, f"a partial plot was visible while drawing: {partial}"
    for n in NAMES:
        data = (plots / n).read_bytes()
        assert _complete(n, data), f"{n} is not whole after a SIGKILL ({len(data)} bytes)"
    # the next drawing works and leaves only whole files (the killed one's temp file is its own)
    r = hpo_cli("plot", str(study))
    assert r.returncode == 0, r.stderr
    assert all(_complete(n, (plots / n).read_bytes()) for n in NAMES)
