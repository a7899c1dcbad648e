"""The study's volume guard: :class:`VolumeGuard` (free space before a trial starts, and whether a
failed trial failed because the volume did).

A trial that fails because the study's volume is full, read-only or broken is not a result: the
ledger records it ``interrupted`` and the run stops with :class:`hpo.VolumeError` (exit 1),
resumable once the volume is fixed.
"""

from __future__ import annotations

import errno
import re

from .errors import VolumeError
from .files import free_bytes, tree_bytes, volume_error
from .study import Study, TrialStatus
from .trial import TrialOutcome

__all__ = ["VolumeGuard", "MIN_FREE_BYTES"]

#: Below this many free bytes on the study's volume no trial starts (see :meth:`VolumeGuard.space_needed`).
MIN_FREE_BYTES = 16 << 20
#: A failed trial whose error says this failed because the volume did (errno texts of ENOSPC,
#: EDQUOT, EROFS, EIO, and torch's checkpoint writer's "file write failed").
_VOLUME_TEXT = re.compile(
    r"No space left on device|Errno 28\b|Disk quota exceeded|Errno 122\b|Read-only file system|Errno 30\b|"
    r"Input/output error|Errno 5\b|PytorchStreamWriter failed writing|file write failed",
)


class VolumeGuard:
    """Free-space checks of one study's volume.

    Args:
        study: the open study.
    """

    def __init__(self, study: Study) -> None:
        self.study = study
        self._trial_bytes = 0  # the largest trial folder of this run (bytes), for the free-space check
        self._sized = 0  # cursor of study.finished_since: the trials space_needed has looked at

    def space_needed(self) -> int:
        """Bytes a new trial needs free on the study's volume: the largest trial folder seen so far
        (weights, logs) plus the space reserve, at least :data:`MIN_FREE_BYTES`."""
        if not self._trial_bytes:  # until a trial folder holds anything: the trials finished since the last look
            done, self._sized = self.study.finished_since(self._sized)
            self._trial_bytes = max((tree_bytes(self.study.trial_dir(r.id)) for r in done[-5:]), default=0)
        return max(MIN_FREE_BYTES, self._trial_bytes + Study.RESERVE_BYTES)

    def check_space(self) -> None:
        """Refuse to start a trial on a volume without :meth:`space_needed` bytes free.

        Raises:
            VolumeError: naming the volume, the free and the needed space.
        """
        needed = self.space_needed()
        if free_bytes(self.study.path) < needed:
            raise volume_error(OSError(errno.ENOSPC, "No space left on device"), self.study.path, needed=needed)

    def trial_failed_by_volume(self, outcome: TrialOutcome) -> bool:
        """Whether a failed trial failed because the study's volume did (full, read-only, I/O error):
        its error names such a write error, or the volume now lacks :meth:`space_needed` bytes."""
        if outcome.status is not TrialStatus.FAILED:
            return False
        if _VOLUME_TEXT.search(outcome.error or ""):
            return True
        try:
            return free_bytes(self.study.path) < self.space_needed()
        except OSError:
            return True

    def error_of(self, trial_id: int, outcome: TrialOutcome) -> VolumeError:
        """The :class:`VolumeError` of a trial that :meth:`trial_failed_by_volume` (its errno read
        from the trial's error text: read-only, I/O error, else no space)."""
        text = outcome.error or ""
        code = (
            errno.EROFS
            if re.search(r"Read-only|Errno 30\b", text)
            else (errno.EIO if re.search(r"Input/output|Errno 5\b", text) else errno.ENOSPC)
        )
        error = volume_error(OSError(code, f"trial {trial_id}'s own writes failed"), self.study.path, needed=self.space_needed())
        error.__cause__ = OSError(code, f"trial {trial_id}'s own writes failed")
        return error
