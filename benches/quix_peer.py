"""A Quix Streams peer of churn-alert, for its throughput benchmark.

Reads churn-alert's input topic (JSON events keyed by customer id, as sent by
`churn-alert produce`) from the beginning and, per customer, in Quix's
RocksDB state store (changelog topics on, Quix's default), keeps time-decayed
rates of purchases, sessions, other activity, support tickets and complaints
at half-lives of 7, 30 and 90 days in event time, scores a fixed logistic
model over them plus the days since the last engagement and the engagement
trend, and sends an alert to the alerts topic when the score crosses the
threshold upward (re-armed once it falls back below a lower mark).

Stops after N messages, then prints one line on stdout:
  quix_peer events=N seconds=S events_per_s=R alerts=A wall_seconds=W wall_events_per_s=V
where S runs from the first message processed to the end of the run (final
checkpoint committed, changelog and alerts flushed) and W from the start of
the script (the quixstreams import, topic set-up and the consumer group join
included).

Usage: quix_peer.py --bootstrap HOST:PORT --topic NAME --total N [--alerts-topic NAME]

The input topic must exist, and must have been created with `retention.ms`
set: Quix reads it to configure its changelog topic.
"""

import argparse
import math
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from datetime import datetime

STARTED = time.perf_counter()  # before the quixstreams import, counted in the wall time

from authlib.deprecate import AuthlibDeprecationWarning  # noqa: E402

# quixstreams imports authlib, which warns (always, by a filter it adds on
# import) that it falls back to httpx; silence that.
warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
from quixstreams import Application, State  # noqa: E402

DAY_MS = 86_400_000
HALF_LIVES_DAYS = (7.0, 30.0, 90.0)
# Decay constants, per millisecond and per day.
LAMBDA_MS = tuple(math.log(2) / (h * DAY_MS) for h in HALF_LIVES_DAYS)
LAMBDA_DAY = tuple(math.log(2) / h for h in HALF_LIVES_DAYS)

# Rates are stored flat: signal s, half-life i at s * H + i.
PURCHASES, SESSIONS, ACTIVITY, TICKETS, COMPLAINTS = range(5)
N_SIGNALS = 5
H = len(HALF_LIVES_DAYS)
N_RATES = N_SIGNALS * H

# Model weights on log(1 + events per week), per signal, per half-life.
WEIGHTS = (
    (-0.6, -0.3, -0.1),  # purchases
    (-0.5, -0.3, -0.1),  # sessions
    (-0.3, -0.2, -0.1),  # other activity
    (0.3, 0.2, 0.1),  # support tickets
    (0.8, 0.4, 0.2),  # complaints
)
RECENCY_WEIGHT = 1.0  # on log(1 + days since the last engagement)
TREND_WEIGHT = -0.8  # on log of the 7-day over the 90-day engagement rate
TREND_EPSILON = 0.1  # events per day, added to both rates of the trend
BIAS = -1.5
THRESHOLD = 0.7  # an alert when the score reaches this from below
REARM = 0.6  # and the next one only after it fell below this

ENGAGEMENT = frozenset(("purchase", "session", "activity"))
STATE_KEY = "churn"


def occurred_at_ms(value):
    """Event time: RFC 3339 text or epoch milliseconds, as churn-alert accepts."""
    if isinstance(value, str):
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"occurred_at {value!r} is neither RFC 3339 nor epoch ms")


def signals(event):
    """(signal, count) pairs the event adds to its customer's rates."""
    kind = event.get("type")
    if kind == "purchase":
        return ((PURCHASES, 1.0),)
    if kind == "session":
        return ((SESSIONS, 1.0),)
    if kind == "activity":
        return ((ACTIVITY, float(event.get("count", 1))),)
    if kind == "support_ticket":
        if event.get("is_complaint"):
            return ((TICKETS, 1.0), (COMPLAINTS, 1.0))
        return ((TICKETS, 1.0),)
    return ()


def update(st, event, at):
    """Applies one event at event time `at` to a customer's state (in place).

    Rates are decayed sums referred to the newest event time seen (the
    anchor), so a late event adds its decayed weight and the result does not
    depend on arrival order.
    """
    rates = st["rates"]
    if at > st["anchor"]:
        for i, lam in enumerate(LAMBDA_MS):
            f = math.exp(-lam * (at - st["anchor"]))
            for s in range(N_SIGNALS):
                rates[s * H + i] *= f
        st["anchor"] = at
    for s, n in signals(event):
        for i, lam in enumerate(LAMBDA_MS):
            rates[s * H + i] += n * math.exp(-lam * (st["anchor"] - at))
    if event.get("type") in ENGAGEMENT and at > st["engaged"]:
        st["engaged"] = at


def score(st):
    """The churn probability at the customer's newest event time."""
    rates = st["rates"]
    z = BIAS
    for s in range(N_SIGNALS):
        for i, lam in enumerate(LAMBDA_DAY):
            z += WEIGHTS[s][i] * math.log1p(7.0 * rates[s * H + i] * lam)
    z += RECENCY_WEIGHT * math.log1p((st["anchor"] - st["engaged"]) / DAY_MS)
    engaged = (SESSIONS, PURCHASES, ACTIVITY)
    short = sum(rates[s * H] for s in engaged) * LAMBDA_DAY[0]
    long = sum(rates[s * H + H - 1] for s in engaged) * LAMBDA_DAY[-1]
    z += TREND_WEIGHT * math.log((short + TREND_EPSILON) / (long + TREND_EPSILON))
    return 1.0 / (1.0 + math.exp(-z))


def process(event, st):
    """Updates the state with one event; returns (new state, alert or None)."""
    at = occurred_at_ms(event["occurred_at"])
    if st is None:
        st = {"anchor": at, "engaged": at, "alerted": False, "rates": [0.0] * N_RATES}
    update(st, event, at)
    p = score(st)
    alert = None
    if not st["alerted"] and p >= THRESHOLD:
        st["alerted"] = True
        alert = {
            "customer_id": event["customer_id"],
            "event_id": event.get("event_id"),
            "occurred_at": event["occurred_at"],
            "score": p,
        }
    elif st["alerted"] and p < REARM:
        st["alerted"] = False
    return st, alert


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True, help="HOST:PORT of the broker")
    ap.add_argument("--topic", required=True, help="input topic")
    ap.add_argument("--total", required=True, type=int, help="messages to process")
    ap.add_argument("--alerts-topic", help="output topic (default: TOPIC-quix-alerts)")
    ap.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="give up after this many seconds without a message (default 30)",
    )
    args = ap.parse_args()

    state_dir = tempfile.mkdtemp(prefix="quix-peer-state-")
    try:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=f"quix-peer-{uuid.uuid4().hex[:12]}",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
        )
        events = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
        alerts_topic = app.topic(
            args.alerts_topic or f"{args.topic}-quix-alerts",
            key_serializer="str",
            value_serializer="json",
        )

        counts = {"events": 0, "alerts": 0, "first": None}

        def step(event, state: State):
            if counts["first"] is None:
                counts["first"] = time.perf_counter()
            st, alert = process(event, state.get(STATE_KEY))
            state.set(STATE_KEY, st)
            counts["events"] += 1
            counts["alerts"] += alert is not None
            if counts["events"] == args.total:
                app.stop()
            return alert

        sdf = app.dataframe(events)
        sdf = sdf.apply(step, stateful=True)
        sdf = sdf.filter(lambda alert: alert is not None)
        sdf.to_topic(alerts_topic)

        # The idle timeout only guards against a topic with fewer than N messages.
        app.run(timeout=args.idle_timeout, collect=False)
        ended = time.perf_counter()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

    n = counts["events"]
    if n < args.total:
        print(f"quix_peer: processed {n} of {args.total} messages, then none for "
              f"{args.idle_timeout:g} s", file=sys.stderr)
        sys.exit(1)
    seconds = ended - counts["first"]
    wall = ended - STARTED
    print(
        f"quix_peer events={n} seconds={seconds:.3f} events_per_s={n / seconds:.0f} "
        f"alerts={counts['alerts']} wall_seconds={wall:.3f} wall_events_per_s={n / wall:.0f}"
    )


if __name__ == "__main__":
    main()
