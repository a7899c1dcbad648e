"""Every built-in backend and the documented example pass the in-process kit
(hpo.testing.BackendTestCase): ask, tell, restore, threads and both directions, in milliseconds."""

import sys
from pathlib import Path

from hpo.testing import LINEAR_SPACE, LINEAR_SPACES, BackendTestCase

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

from hpo_median_random import MedianRandom


class TestMedianRandomKit(BackendTestCase):
    backend = MedianRandom


class TestUltralyticsKit(BackendTestCase):
    backend = "ultralytics"
    space = LINEAR_SPACE  # the native mutation searches linear ranges only
    spaces = LINEAR_SPACES
    prunes = False  # early stopping is off by default, as in the native tuner


class TestUltralyticsPercentileKit(TestUltralyticsKit):
    options = {"pruner": "percentile"}
    prunes = True


class TestOptunaKit(BackendTestCase):
    backend = "optuna"
    resume_proposes_as_live = False  # a resumed study reseeds TPE (seed + trials in storage) not to redraw the first run's values
