"""hpo backend ``median-random``: random search with a median stopping rule (a complete example)."""

import math
import random
import statistics

from pydantic import Field

from hpo import Backend, BackendOptions, Kind, Suggestion, hookimpl


class MedianRandomOptions(BackendOptions):
    warmup: int = Field(3, ge=1, description="finished trials before the median rule may prune")


class MedianRandom(Backend):
    """Random search (log-uniform for log keys); prunes a trial worse than the finished ones' median."""

    name, description, Options = "median-random", "random search + median stopping (example)", MedianRandomOptions

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.curves = []  # {epoch: objective} of every finished trial

    def ask(self):  # trial k draws from seed/k: a resumed study goes on, it never repeats its first draws
        rng = random.Random(None if self.config.seed is None else f"{self.config.seed}/{len(self.study.records())}")
        params = {}
        for key, p in self.config.space.items():
            if p.kind is Kind.CHOICE:
                params[key] = rng.choice(p.choices)
            else:  # uniform, or uniform in log space
                x = rng.uniform(*((math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)))
                params[key] = p.clip(math.exp(x) if p.log else x)
        return Suggestion(params)

    def tell(self, record):  # a NaN is None in a record read back from the study (restore)
        m = self.config.metric
        self.curves.append({r["epoch"]: r[m] for r in record.epochs if r.get(m) is not None and math.isfinite(r[m])})

    def should_prune(self, record, row):
        value, sign = row.get(self.config.metric), 1 if self.config.direction == "maximize" else -1
        if value is None or not math.isfinite(value):  # not validated: nothing to judge; NaN: diverged, stop
            return value is not None
        peers = [sign * c[row["epoch"]] for c in self.curves if row["epoch"] in c]  # in the study's direction
        return len(peers) >= self.options.warmup and sign * value < statistics.median(peers)


@hookimpl
def hpo_register_backends():
    return [MedianRandom]
