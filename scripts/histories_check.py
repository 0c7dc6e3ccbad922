#!/usr/bin/env python3
"""Does the model, with its defaults, rank churn on histories unlike our
simulator? Prints, per history, the ROC AUC of "no purchase (engagement)
within 90 days of the cut-off" among every customer seen by the cut-off for:

- model: `churn-alert train --as-of CUT --horizon 90d` (every other flag at
  its default), then `churn-alert score --as-of CUT`, ranked by
  `probability` (every customer has one, active or past onset);
- RFM logistic: a plain logistic regression on recency, frequency and
  monetary value at CUT - 90d, labelled by the 90 days to CUT, applied at
  CUT (fitted here, by Newton's method, on standardised columns);
- BG/NBD: the model file's BG/NBD fit (by `train`, in Rust, on the same
  history up to CUT), ranked by fewest expected purchases within 90 days;
- recency alone.

Histories: `churn-alert simulate --kind bgnbd --cadence C` for weekly,
monthly, quarterly and half-yearly buyers, `--kind paretonbd`, and
`--kind saas`, each over 540 days, on several seeds. On the subscription
histories the question is the one a subscription business asks, "cancels
within 90 days", among the customers still subscribed at the cut-off (and
the RFM logistic is fitted on that label). Standard library only.

Usage: histories_check.py [BINARY] [--customers N] [--seeds 1,2,3]
        [--kinds bgnbd:weekly,bgnbd:monthly,...] [--keep DIR]
"""

import argparse
import csv
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile

END = "2026-06-01"
HORIZON = 90
DAY = dt.timedelta(days=1)
ENGAGEMENT = {"purchase", "session", "activity"}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def parse_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def auc(scores, labels):
    """ROC AUC with ties counted half (Mann-Whitney)."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        avg = (i + j) / 2 + 1
        rank_sum += avg * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def logistic_fit(x, y, l2=1e-4, iters=50):
    """Newton's method for an L2 logistic regression; x rows of floats."""
    d = len(x[0]) + 1
    w = [0.0] * d
    rows = [[1.0] + r for r in x]
    for _ in range(iters):
        g = [0.0] * d
        h = [[0.0] * d for _ in range(d)]
        for r, t in zip(rows, y):
            z = sum(a * b for a, b in zip(w, r))
            p = 1 / (1 + math.exp(-max(min(z, 30), -30)))
            for a in range(d):
                g[a] += (p - t) * r[a]
                for b in range(d):
                    h[a][b] += p * (1 - p) * r[a] * r[b]
        n = len(rows)
        for a in range(1, d):
            g[a] += l2 * n * w[a]
            h[a][a] += l2 * n
        step = solve(h, g)
        w = [a - b for a, b in zip(w, step)]
        if max(abs(s) for s in step) < 1e-8:
            break
    return w


def solve(a, b):
    """Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-12:
            continue
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                for k in range(c, n + 1):
                    m[r][k] -= f * m[c][k]
    return [m[i][n] / m[i][i] if abs(m[i][i]) > 1e-12 else 0.0 for i in range(n)]


def rfm_at(events, t):
    """customer -> (recency days, purchases, spend) from events before t,
    for customers seen by t (recency from the last engagement)."""
    out = {}
    for c, evs in events.items():
        before = [e for e in evs if e[0] < t]
        if not before:
            continue
        engaged = [e[0] for e in before if e[1] in ENGAGEMENT]
        last = max(engaged) if engaged else min(e[0] for e in before)
        buys = [e for e in before if e[1] == "purchase"]
        out[c] = (
            (t - last) / DAY,
            float(len(buys)),
            math.log1p(sum(e[2] for e in buys)),
        )
    return out


def cancelled(events, customers, t):
    """customer -> cancels in [t, t + horizon)."""
    end = t + HORIZON * DAY
    return {
        c: any(t <= e[0] < end and e[1] == "subscription:cancel" for e in events[c])
        for c in customers
    }


def subscribed(events, t):
    """Customers with a subscription event before t and no cancel before t."""
    return {
        c for c, evs in events.items()
        if any(e[0] < t and e[1].startswith("subscription") for e in evs)
        and not any(e[0] < t and e[1] == "subscription:cancel" for e in evs)
    }


def churned(events, customers, t):
    """customer -> no engagement in [t, t + horizon)."""
    end = t + HORIZON * DAY
    return {
        c: not any(t <= e[0] < end and e[1] in ENGAGEMENT for e in events[c])
        for c in customers
    }


def check(binary, kind, cadence, seed, customers, work):
    out = os.path.join(work, f"{kind}-{cadence or 'default'}-{seed}")
    sim = [binary, "simulate", "--kind", kind, "--customers", str(customers),
           "--days", "540", "--seed", str(seed), "--end", END, "--out", out]
    if cadence:
        sim += ["--cadence", cadence]
    run(sim)
    events = {}
    with open(os.path.join(out, "events.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            kind_ = e["type"]
            if kind_ == "subscription":
                kind_ += ":" + e.get("action", "")
            events.setdefault(e["customer_id"], []).append(
                (parse_time(e["occurred_at"]), kind_, float(e.get("amount", 0.0)))
            )
    end = parse_time(END + "T00:00:00Z")
    cut = end - HORIZON * DAY
    cut_s = cut.strftime("%Y-%m-%d")
    model = os.path.join(out, "model.json")
    t = run([binary, "train", "--events", os.path.join(out, "events.jsonl"),
             "--as-of", cut_s, "--horizon", f"{HORIZON}d", "--out", model])
    gap = next((l for l in t.stderr.splitlines() if l.startswith("churn gap")), "")
    scores = os.path.join(out, "scores.csv")
    run([binary, "score", "--events", os.path.join(out, "events.jsonl"),
         "--model", model, "--as-of", cut_s, "--out", scores])
    rows = {}
    with open(scores) as f:
        for r in csv.DictReader(f):
            rows[r["customer_id"]] = r
    saas = kind == "saas"
    outcome = cancelled if saas else churned
    now = rfm_at(events, cut)
    ids = sorted(c for c in now if c in rows)
    if saas:
        still = subscribed(events, cut)
        ids = [c for c in ids if c in still]
    label = outcome(events, ids, cut)
    y = [label[c] for c in ids]
    model_auc = auc([float(rows[c]["probability"]) for c in ids], y)
    past = {c for c in ids if rows[c]["status"] == "churned"}
    # RFM logistic: features at cut - horizon, label in the horizon to cut.
    before = cut - HORIZON * DAY
    train_x = rfm_at(events, before)
    train_ids = sorted(train_x)
    if saas:
        still = subscribed(events, before)
        train_ids = [c for c in train_ids if c in still]
    train_y = outcome(events, train_ids, before)
    cols = list(zip(*[train_x[c] for c in train_ids]))
    mean = [sum(c) / len(c) for c in cols]
    sd = [max(1e-9, math.sqrt(sum((v - m) ** 2 for v in c) / len(c))) for c, m in zip(cols, mean)]
    std = lambda r: [(v - m) / s for v, m, s in zip(r, mean, sd)]
    w = logistic_fit([std(train_x[c]) for c in train_ids], [float(train_y[c]) for c in train_ids])
    rfm_scores = [sum(a * b for a, b in zip(w, [1.0] + std(now[c]))) for c in ids]
    rfm_auc = auc(rfm_scores, y)
    exp = [rows[c].get("expected_purchases", "") for c in ids]
    bg_auc = auc([-float(v) for v in exp], y) if all(exp) else float("nan")
    rec_auc = auc([now[c][0] for c in ids], y)
    return {
        "history": f"{kind}{':' + cadence if cadence else ''} seed {seed}",
        "customers": len(ids),
        "churn in 90 d": sum(y) / len(y),
        "past onset": len(past) / len(ids),
        "model": model_auc,
        "RFM logistic": rfm_auc,
        "BG/NBD": bg_auc,
        "recency": rec_auc,
        "gap": gap,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="target/release/churn-alert")
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument(
        "--kinds",
        default="bgnbd:weekly,bgnbd:monthly,bgnbd:quarterly,bgnbd:half-yearly,paretonbd:monthly,saas:",
    )
    ap.add_argument("--keep", help="keep the histories and models here")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="histories-check-")
    os.makedirs(work, exist_ok=True)
    cols = ["model", "RFM logistic", "BG/NBD", "recency"]
    print(f"{'history':28} {'custs':>6} {'churn':>6} {'past':>6} " + " ".join(f"{c:>12}" for c in cols))
    worse = 0
    for k in a.kinds.split(","):
        kind, _, cadence = k.partition(":")
        for seed in a.seeds.split(","):
            r = check(a.binary, kind, cadence or None, int(seed), a.customers, work)
            print(f"{r['history']:28} {r['customers']:>6} {r['churn in 90 d']:>6.3f} {r['past onset']:>6.3f} "
                  + " ".join(f"{r[c]:>12.4f}" for c in cols) + f"   {r['gap']}", flush=True)
            best = max(r["RFM logistic"], r["BG/NBD"] if not math.isnan(r["BG/NBD"]) else 0)
            worse += r["model"] < best
    print(f"histories where a plain baseline ranks better than the model: {worse}")
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
