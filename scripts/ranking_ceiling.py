#!/usr/bin/env python3
"""How well can any model rank churn from events? A yardstick for the
early-warning ranking (issue 12), outside the service.

For simulated histories (`churn-alert simulate --oracle-at DATE ...`), it
ranks everyone still there at each date (per truth.csv) by churn within
the next 30 days, and prints the ROC AUC of:

- the shipped model: `churn-alert score --as-of DATE` (a customer past
  onset ranks by one minus the chance of coming back), from SCORE_DIR;
- plain scikit-learn models trained on the simulator's *truth* label (which
  no deployment has) on windowed engagement counts and active days (3 to
  112 days), their ratios to the customer's lifetime and earlier rates,
  days since the last engagement, gaps between engagements, email opens,
  decayed complaints and payment failures, the latest NPS, a price rise
  and the segment; a logistic regression and gradient-boosted trees;
- the simulator's oracle (its hidden state).

The truth-trained models are an upper estimate of what events carry: the
service trains on labels it can read from the data.

Needs numpy and scikit-learn. Usage:

    ranking_ceiling.py TRAIN_SIM EVAL_SIM[,EVAL_SIM...] DATE[,DATE...] SCORE_DIR

TRAIN_SIM and EVAL_SIM are `simulate --out` directories (the simulated year
must end on 2026-11-01 and start on 2025-11-01), EVAL_SIMs with
oracle-DATE.csv for each DATE. SCORE_DIR holds `score` CSVs named
score-<basename of EVAL_SIM>-<DATE>.csv. Training dates: 2026-04-01 and
every 14 days to 2026-08-05 (as `train`'s defaults for this year).
"""

import collections
import csv
import datetime as dt
import json
import os
import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

START = dt.datetime(2025, 11, 1, tzinfo=dt.timezone.utc)
HORIZON = 30
WINDOWS = (3, 7, 14, 28, 56, 112)


def day_of(text):
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t - START).total_seconds() / 86400


def load(sim):
    eng = collections.defaultdict(list)
    opens = collections.defaultdict(list)
    complaints = collections.defaultdict(list)
    failures = collections.defaultdict(list)
    nps = collections.defaultdict(list)
    rise, first, segment = {}, {}, {}
    with open(os.path.join(sim, "events.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            c, t, ty = e["customer_id"], day_of(e["occurred_at"]), e["type"]
            first[c] = min(first.get(c, t), t)
            action = e.get("action")
            if ty in ("session", "purchase", "activity"):
                eng[c].append(t)
            elif ty == "email" and action == "open":
                opens[c].append(t)
            elif ty == "support_ticket" and e.get("is_complaint"):
                complaints[c].append(t)
            elif ty == "subscription" and action == "payment_failed":
                failures[c].append(t)
            elif ty == "subscription" and action == "upgrade":
                rise[c] = min(rise.get(c, t), t)
            elif ty == "survey":
                nps[c].append((t, e["nps"]))
            elif ty == "consent":
                segment[c] = e.get("attributes", {}).get("segment", "")
    truth = {}
    with open(os.path.join(sim, "truth.csv")) as f:
        for r in csv.DictReader(f):
            truth[r["customer_id"]] = day_of(r["churned_at"]) if r["churned_at"] else 1e9
    return {
        "eng": {k: np.sort(np.array(v)) for k, v in eng.items()},
        "opens": {k: np.array(v) for k, v in opens.items()},
        "complaints": complaints,
        "failures": failures,
        "nps": nps,
        "rise": rise,
        "first": first,
        "segment": segment,
        "truth": truth,
    }


def decayed(times, day):
    return sum(0.97 ** (day - t) for t in times if t < day)


def features(d, day):
    rows, labels, ids = [], [], []
    for c, f0 in d["first"].items():
        if f0 > day or d["truth"][c] < day:
            continue
        e = d["eng"].get(c, np.array([]))
        e = e[e < day]
        last = e[-1] if len(e) else f0
        tenure = day - f0
        counts = [np.sum(e >= day - w) for w in WINDOWS]
        life = len(e) / max(tenure, 7)
        earlier = (
            np.sum((e >= day - 180) & (e < day - 56)) / max(min(tenure, 180) - 56, 7)
            if tenure > 63
            else life
        )
        active = [len(np.unique(np.floor(e[e >= day - w]))) for w in (7, 14, 28, 56)]
        o = d["opens"].get(c, np.array([]))
        o = o[o < day]
        latest = max(((t, v) for t, v in d["nps"].get(c, []) if t < day), default=(0, None))[1]
        gaps = np.diff(e) if len(e) > 2 else np.array([tenure])
        rows.append(
            counts
            + [life, earlier, day - last, tenure]
            + active
            + [np.sum(o >= day - 28), np.sum(o >= day - 84)]
            + [
                decayed(d["complaints"].get(c, []), day),
                decayed(d["failures"].get(c, []), day),
                float(latest is not None and latest <= 6),
                float(d["rise"].get(c, 1e9) < day),
                float(d["segment"].get(c) == "frequent"),
                float(d["segment"].get(c) == "subscriber"),
                float(np.mean(gaps)),
                float(np.max(gaps)),
            ]
        )
        labels.append(d["truth"][c] < day + HORIZON)
        ids.append(c)
    x = np.array(rows, float)
    ratios = [(x[:, i] / w + 0.01) / (x[:, 6] + 0.01) for i, w in enumerate(WINDOWS)]
    ratios += [(x[:, i] / w + 0.01) / (x[:, 7] + 0.01) for i, w in enumerate(WINDOWS)]
    ratios = np.array(ratios).T
    return np.column_stack([x, np.log1p(x), ratios, np.log(ratios)]), np.array(labels), ids


def main():
    train_sim, eval_sims, dates, score_dir = sys.argv[1:5]
    train = load(train_sim)
    train_days = [(dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc) - START).days + 14 * k for k in range(10)]
    parts = [features(train, day) for day in train_days]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(C=1.0, max_iter=3000).fit(scaler.transform(x), y)
    gb = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, random_state=0).fit(x, y)
    print("sim, date, customers still there, churn within 30 days: shipped / truth-trained LR / truth-trained GB / oracle")
    for sim in eval_sims.split(","):
        d = load(sim)
        name = os.path.basename(os.path.normpath(sim))
        for date in dates.split(","):
            day = (dt.datetime.fromisoformat(date + "T00:00:00+00:00") - START).days
            xe, ye, ids = features(d, day)
            with open(os.path.join(score_dir, f"score-{name}-{date}.csv")) as f:
                scores = {r["customer_id"]: r for r in csv.DictReader(f)}
            shipped = np.array(
                [
                    float(scores[c]["probability"])
                    if scores[c]["probability"]
                    else 1 - float(scores[c]["return_probability"])
                    for c in ids
                ]
            )
            with open(os.path.join(sim, f"oracle-{date}.csv")) as f:
                oracle = {r["customer_id"]: float(r["p_churn_30d"]) for r in csv.DictReader(f)}
            print(
                f"{name}, {date}, {len(ye)}, {ye.mean():.3f}: "
                f"{roc_auc_score(ye, shipped):.4f} / "
                f"{roc_auc_score(ye, lr.predict_proba(scaler.transform(xe))[:, 1]):.4f} / "
                f"{roc_auc_score(ye, gb.predict_proba(xe)[:, 1]):.4f} / "
                f"{roc_auc_score(ye, np.array([oracle[c] for c in ids])):.4f}"
            )


if __name__ == "__main__":
    main()
