"""Reference numbers for the experiment readout, from gbstats itself.

For each pair of retention counts (holdout, variant): the fixed-horizon
(TwoSidedTTest) and sequential (SequentialTwoSidedTTest, tuning 5000)
estimate, interval and p-value, absolute and relative; and chi-square
sample-ratio p-values (utils.check_srm). Run by scripts/gbstats_fixtures.sh.
"""
import json
import random
import sys

from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import ProportionStatistic
from gbstats.utils import check_srm

ALPHA = 0.05
TUNING = 5000


def result(test):
    r = test.compute_result()
    return {"estimate": r.expected, "ci": list(r.ci), "p_value": r.p_value}


def case(na, ha, nb, hb):
    a = ProportionStatistic(n=na, sum=ha)
    b = ProportionStatistic(n=nb, sum=hb)
    out = {"a": [na, ha], "b": [nb, hb]}
    for kind in ["absolute", "relative"]:
        fixed = TwoSidedTTest(a, b, FrequentistConfig(alpha=ALPHA, difference_type=kind))
        seq = SequentialTwoSidedTTest(
            a,
            b,
            SequentialConfig(alpha=ALPHA, difference_type=kind, sequential_tuning_parameter=TUNING),
        )
        out[kind] = {"fixed": result(fixed), "sequential": result(seq)}
    return out


def main(path):
    rng = random.Random(30)
    pairs = [
        (1000, 200, 1000, 230),
        (10000, 2000, 10000, 2300),
        (120, 30, 480, 150),
        (50, 10, 55, 8),
        (3000, 2400, 27000, 21900),
        (400, 88, 3600, 700),
        (20, 0, 20, 5),  # control rate 0: gbstats' uninformative default
        (30, 30, 40, 20),  # no variance in the control
    ]
    for _ in range(40):
        na, nb = rng.randint(20, 20000), rng.randint(20, 20000)
        p = rng.uniform(0.05, 0.9)
        ha = sum(rng.random() < p for _ in range(na))
        hb = sum(rng.random() < p + rng.uniform(-0.05, 0.08) for _ in range(nb))
        pairs.append((na, ha, nb, hb))
    srm = []
    for users, weights in [
        ([5200, 4800], [0.5, 0.5]),
        ([5000, 5000], [0.5, 0.5]),
        ([5030, 4970], [0.5, 0.5]),
        ([1000, 4400, 4600], [0.1, 0.45, 0.45]),
        ([1150, 4400, 4450], [0.1, 0.45, 0.45]),
        ([310, 2900, 6790], [0.03, 0.291, 0.679]),
        ([0, 0], [0.5, 0.5]),
    ]:
        srm.append({"users": users, "weights": weights, "p_value": check_srm(users, weights)})
    json.dump(
        {
            "generator": "scripts/gbstats_fixtures.py with gbstats 0.8.0",
            "alpha": ALPHA,
            "sequential_tuning": TUNING,
            "cases": [case(*p) for p in pairs],
            "srm": srm,
        },
        open(path, "w"),
        indent=1,
    )
    print(f"wrote {len(pairs)} cases and {len(srm)} SRM checks to {path}")


if __name__ == "__main__":
    main(sys.argv[1])
