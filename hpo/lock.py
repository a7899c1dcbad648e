"""The single-writer lock of a study: ``<study>/lock``.

The writer holds an advisory ``flock`` on the lock file for its whole life. The kernel releases it
when the process dies (SIGKILL, OOM, a killed pod), so a dead writer's lock is *proven* dead and
taken over at once, and two processes racing for a free lock never both win. The file also
records the holder (host, pid, start time) for people and for ``hpo unlock``.

``flock`` is reliable on local filesystems (a PVC on a block device: ext4, xfs, ...; tmpfs,
overlay, btrfs, zfs) and across hosts on NFSv4 and CephFS (the server holds the lock). On other
network filesystems (NFSv3, SMB, FUSE mounts such as object-store drivers) a lock taken on one
host may be invisible on another, so there the holder also refreshes the file's mtime every
:data:`LOCK_HEARTBEAT_S` seconds, and a holder on another host counts as gone only when its
heartbeat is older than :data:`LOCK_STALE_AFTER_S` seconds. Set ``HPO_LOCK_HEARTBEAT=1`` to force
that mode on a filesystem hpo takes for reliable.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .errors import StudyLockedError

__all__ = [
    "StudyLock",
    "LOCK_STALE_AFTER_S",
    "LOCK_HEARTBEAT_S",
    "filesystem_type",
    "kernel_lock_reliable",
]

#: A heartbeat older than this (seconds) marks a holder on another host as gone (heartbeat mode).
LOCK_STALE_AFTER_S = 120.0
#: How often the holder refreshes the heartbeat (seconds; heartbeat mode only).
LOCK_HEARTBEAT_S = 15.0

#: Filesystems whose ``flock`` the kernel (or, for nfs4/ceph, the server) enforces for every
#: process that can open the file: a lock we can take has no live holder.
RELIABLE_FILESYSTEMS = frozenset(
    {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "zfs",
        "f2fs",
        "jfs",
        "reiserfs",
        "tmpfs",
        "ramfs",
        "overlay",
        "nfs4",
        "ceph",
        "gpfs",
    }
)


def filesystem_type(path: str | Path) -> str:
    """The filesystem type (``/proc/self/mountinfo``) of the mount holding ``path``; ``""`` if unknown."""
    p = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mnt = fields[4].replace("\\040", " ")
                inside = p == mnt or p.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fstype = mnt, right.split()[0]
    except OSError:
        return ""
    return fstype


def kernel_lock_reliable(path: str | Path) -> bool:
    """Whether a free ``flock`` on a file under ``path`` proves that no live process holds it.

    True on :data:`RELIABLE_FILESYSTEMS` unless ``HPO_LOCK_HEARTBEAT=1`` is set.
    """
    if os.environ.get("HPO_LOCK_HEARTBEAT", "").strip() not in ("", "0"):
        return False
    return filesystem_type(path) in RELIABLE_FILESYSTEMS


def _read_fd(fd: int) -> dict[str, Any] | None:
    """The holder record in the open lock file, ``None`` if empty or half-written."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


class StudyLock:
    """The single-writer lock ``<study>/lock`` (see the module docstring).

    Args:
        path: the lock file.
        stale_after_s: heartbeat age (seconds) after which a holder on another host is gone;
            heartbeat mode only.
        reliable: whether ``flock`` proves liveness here; default :func:`kernel_lock_reliable`.

    Attributes:
        took_over: the record of the dead writer whose lock :meth:`acquire` took over, else ``None``.
    """

    def __init__(self, path: str | Path, *, stale_after_s: float = LOCK_STALE_AFTER_S, reliable: bool | None = None):
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.reliable = kernel_lock_reliable(self.path.parent) if reliable is None else reliable
        self.took_over: dict[str, Any] | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def holder(self) -> dict[str, Any] | None:
        """The recorded holder (``host``, ``pid``, ``started``, ``age_s`` of the heartbeat), or ``None``
        when no lock file exists. ``{}`` plus ``age_s`` when the file is empty or half-written."""
        if self._fd is not None:  # never open the file again while holding it (NFS: a close drops the lock)
            info = _read_fd(self._fd) or {}
            return {**info, "age_s": time.time() - os.fstat(self._fd).st_mtime}
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            info = _read_fd(fd) or {}
            return {**info, "age_s": time.time() - os.fstat(fd).st_mtime}
        finally:
            os.close(fd)

    def live_holder(self) -> dict[str, Any] | None:
        """The holder record (as :meth:`holder`) when a live writer holds this lock, else ``None``:
        no lock file (no writer, or it ended), or its writer is gone.

        The proof is :meth:`acquire`'s: a held ``flock`` is a live writer and a free one a dead
        writer, except in heartbeat mode, where a holder on another host whose heartbeat is younger
        than :attr:`stale_after_s` cannot be proven dead and counts as live. A free lock is taken
        (shared) for an instant and never waited for; a writer starting at that instant looks again
        (:meth:`acquire`), so probing never makes it fail.
        """
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            info = {**(_read_fd(fd) or {}), "age_s": time.time() - os.fstat(fd).st_mtime}
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return info
            fcntl.flock(fd, fcntl.LOCK_UN)
            recorded = os.fstat(fd).st_size > 0
            elsewhere = info.get("host") != socket.gethostname()
            if recorded and not self.reliable and elsewhere and info["age_s"] <= self.stale_after_s:
                return info
            return None
        finally:
            os.close(fd)

    def _locked_error(self, info: dict[str, Any] | None, *, live: bool) -> StudyLockedError:
        where = self.path.parent
        if not info or "pid" not in info:
            return StudyLockedError(
                f"study: '{where}' is locked by a writer that is starting (lock file still empty); "
                "wait for it, or start this run again in a few seconds"
            )
        age = info.get("age_s", 0.0)
        who = f"host {info.get('host')} pid {info.get('pid')} (since {info.get('started')}"
        if live:
            return StudyLockedError(
                f"study: '{where}' is being written by {who}); wait for it to finish or stop that process "
                "(one writer per study; extra processes of the optuna backend use --join)"
            )
        return StudyLockedError(
            f"study: '{where}' is locked by {who}, heartbeat {age:.0f} s ago, on a filesystem where hpo cannot "
            f"see locks of other hosts); it counts as gone after {self.stale_after_s:.0f} s of silence; if that "
            f"pod is gone for sure, run: hpo unlock --force {where}"
        )

    def _try_flock(self) -> tuple[int, dict[str, Any] | None] | None:
        """Open and ``flock`` the current lock file. Returns (fd, recorded holder) or ``None`` to retry.

        Raises:
            StudyLockedError: a live process holds the lock.
        """
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            for pause in (0.01, 0.0):  # a prober (live_holder) holds a free lock for an instant: look again once
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not pause:
                        raise
                    time.sleep(pause)
        except BlockingIOError:
            info = _read_fd(fd)
            if info is not None:
                info["age_s"] = time.time() - os.fstat(fd).st_mtime
            os.close(fd)
            raise self._locked_error(info, live=True) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (unlinked) between our open and our flock: lock the new file
            os.close(fd)
            return None
        info = _read_fd(fd)
        if info is not None:
            info["age_s"] = time.time() - os.fstat(fd).st_mtime
        return fd, info

    def acquire(self) -> None:
        """Take the lock, or raise :class:`hpo.errors.StudyLockedError` naming the holder.

        A recorded holder whose ``flock`` is free is gone: on a reliable filesystem, or on this host,
        it is taken over at once (:attr:`took_over` is set); in heartbeat mode a holder on another
        host (or an unreadable record) is taken over only after :attr:`stale_after_s` seconds of
        silence.

        Raises:
            StudyLockedError: another process holds it.
        """
        for _ in range(50):
            got = self._try_flock()
            if got is None:
                continue
            fd, info = got
            file_age = time.time() - os.fstat(fd).st_mtime
            recorded = os.fstat(fd).st_size > 0
            if recorded and not self.reliable:
                same_host = bool(info) and (info or {}).get("host") == socket.gethostname()
                if not same_host and file_age <= self.stale_after_s:
                    os.close(fd)  # drops our flock
                    raise self._locked_error(info, live=False)
            if recorded:
                self.took_over = info or {"host": "?", "pid": "?", "started": "?", "age_s": file_age}
            self._record(fd)
            return
        raise StudyLockedError(f"study: could not take the lock '{self.path}' (it keeps changing); retry")

    def _record(self, fd: int) -> None:
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": _utcnow()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if not self.reliable:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="hpo-lock-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            fd = self._fd
            if fd is None:
                return
            with contextlib.suppress(OSError):
                os.utime(fd)

    def release(self) -> None:
        """Release the lock if this object holds it: the file is removed, then the ``flock`` dropped."""
        self._stop.set()
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def break_stale(self, *, force: bool = False) -> dict[str, Any] | None:
        """Remove a lock whose holder is gone (``hpo unlock``); return the removed holder record.

        Refuses a lock whose holder is proven alive (its ``flock`` is held, or it is a live process
        on this host). In heartbeat mode a holder on another host whose heartbeat is fresh cannot be
        proven dead: that needs ``force=True``.

        Raises:
            StudyLockedError: the holder is alive (or, without ``force``, may be).
        """
        info = self.holder()
        if info is None:
            return None
        got = None
        try:
            while got is None:
                got = self._try_flock()
        except StudyLockedError:
            here = info.get("host") == socket.gethostname()
            raise StudyLockedError(
                f"unlock: '{self.path.parent}' is held by the live process {info.get('pid', '?')} on "
                + (
                    f"this host; stop it first (kill {info.get('pid')})"
                    if here
                    else f"host {info.get('host', '?')}; stop it first"
                )
                + "; a lock is never removed from a running writer"
            ) from None
        fd, info = got
        try:
            same_host = bool(info) and (info or {}).get("host") == socket.gethostname()
            age = time.time() - os.fstat(fd).st_mtime
            if not self.reliable and not same_host and age <= self.stale_after_s and not force:
                raise StudyLockedError(
                    f"unlock: '{self.path.parent}' is held by host {(info or {}).get('host', '?')} pid "
                    f"{(info or {}).get('pid', '?')} (heartbeat {age:.0f} s ago), which hpo cannot check from here; "
                    f"if that pod is gone for sure, run: hpo unlock --force {self.path.parent}"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        finally:
            os.close(fd)
        return info or {"host": "?", "pid": "?", "started": "?"}


def _utcnow() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
