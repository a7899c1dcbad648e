"""hpo backend ``median-random``: random search with a median stopping rule (a complete example)."""

import math
import random
import statistics

from pydantic import Field

from hpo import Backend, BackendOptions, Kind, Suggestion, hookimpl


class MedianRandomOptions(BackendOptions):
    warmup: int = Field(3, ge=1, description="finished trials before the median rule may prune")


class MedianRandom(Backend):
    """Uniform proposals (log-uniform for log keys); prune a trial whose objective is below the
    median of the finished trials' at the same epoch (for maximised metrics)."""

    name, description, Options = "median-random", "random search + median stopping (example)", MedianRandomOptions

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rng, self.curves = random.Random(self.config.seed), []  # curves: {epoch: objective} per finished trial

    def ask(self):
        params = {}
        for key, p in self.config.space.items():
            if p.kind is Kind.CHOICE:
                params[key] = self.rng.choice(p.choices)
            else:  # uniform, or uniform in log space
                x = self.rng.uniform(*((math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)))
                params[key] = p.clip(math.exp(x) if p.log else x)
        return Suggestion(params)

    def tell(self, record):
        self.curves.append({r["epoch"]: r.get(self.config.metric, math.nan) for r in record.epochs})

    def should_prune(self, record, row):
        value = row.get(self.config.metric, math.nan)
        peers = [c[row["epoch"]] for c in self.curves if math.isfinite(c.get(row["epoch"], math.nan))]
        return not math.isfinite(value) or (len(peers) >= self.options.warmup and value < statistics.median(peers))


@hookimpl
def hpo_register_backends():
    return [MedianRandom]
