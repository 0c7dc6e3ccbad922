//! The validated customer event: what the pure core consumes.
//!
//! Wire formats (JSON, protobuf) are decoded and checked in [`crate::pipeline::decode`];
//! everything here is already valid, amounts are in the base currency.

use std::collections::BTreeMap;

/// Event time, in milliseconds since the Unix epoch.
pub type Millis = i64;

/// One day in milliseconds.
pub const DAY_MS: Millis = 86_400_000;

/// A customer behaviour event that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// De-duplication key, unique per customer.
    pub event_id: String,
    /// The customer the event is about (also the Kafka key).
    pub customer_id: String,
    /// When it happened (event time).
    pub occurred_at: Millis,
    /// Free-form attributes; the latest value per key is kept.
    pub attributes: BTreeMap<String, String>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with the fields of each event type.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// An order; `amount` is in the base currency.
    Purchase {
        amount: f64,
        order_id: Option<String>,
    },
    /// Money given back; `amount` is in the base currency.
    Refund {
        amount: f64,
        order_id: Option<String>,
    },
    /// A web or app visit.
    Session {
        duration_seconds: f64,
        page_views: u64,
        channel: Option<Channel>,
    },
    /// Something the email platform saw.
    Email {
        action: EmailAction,
        campaign_id: Option<String>,
    },
    /// A support desk ticket.
    SupportTicket {
        severity: Severity,
        category: Option<String>,
        is_complaint: bool,
        satisfaction: Option<u8>,
    },
    /// A change to the customer's subscription.
    Subscription {
        action: SubscriptionAction,
        plan: Option<String>,
        monthly_value: Option<f64>,
    },
    /// A survey answer.
    Survey { nps: u8 },
    /// Any other product usage (login, post, feature used, ...).
    Activity { name: String, count: u64 },
    /// Marketing consent given or withdrawn.
    Consent { marketing: bool },
    /// Delete every trace of the customer (GDPR).
    Erasure,
}

impl EventKind {
    /// The `type` name of the event contract.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Purchase { .. } => "purchase",
            EventKind::Refund { .. } => "refund",
            EventKind::Session { .. } => "session",
            EventKind::Email { .. } => "email",
            EventKind::SupportTicket { .. } => "support_ticket",
            EventKind::Subscription { .. } => "subscription",
            EventKind::Survey { .. } => "survey",
            EventKind::Activity { .. } => "activity",
            EventKind::Consent { .. } => "consent",
            EventKind::Erasure => "erasure",
        }
    }

    /// Whether the event shows the customer using the product or buying:
    /// the events whose absence defines churn.
    pub fn is_engagement(&self) -> bool {
        matches!(
            self,
            EventKind::Purchase { .. } | EventKind::Session { .. } | EventKind::Activity { .. }
        )
    }
}

/// Every event type of the contract, in documentation order.
pub const EVENT_TYPES: [&str; 10] = [
    "purchase",
    "refund",
    "session",
    "email",
    "support_ticket",
    "subscription",
    "survey",
    "activity",
    "consent",
    "erasure",
];

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every accepted wire value.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// Parses the wire value.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The wire value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

wire_enum!(
    /// Where a session happened.
    Channel { Web = "web", App = "app" }
);
wire_enum!(
    /// What the email platform saw.
    EmailAction {
        Delivered = "delivered",
        Open = "open",
        Click = "click",
        Unsubscribe = "unsubscribe",
        Bounce = "bounce",
    }
);
wire_enum!(
    /// Support ticket severity.
    Severity { Low = "low", Medium = "medium", High = "high" }
);
wire_enum!(
    /// Subscription lifecycle step.
    SubscriptionAction {
        Start = "start",
        Renew = "renew",
        Upgrade = "upgrade",
        Downgrade = "downgrade",
        Cancel = "cancel",
        PaymentFailed = "payment_failed",
    }
);

/// A stable 64-bit FNV-1a hash. Used where a hash must never change between
/// versions or machines (de-duplication ids, alert ids).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Separator, so ("ab","c") and ("a","bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in part.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Which clock "now" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// Live: the wall clock.
    Wall,
    /// Replay: the partition's event-time watermark.
    Event,
}

/// As written in the config (`wall`, `event`).
impl std::fmt::Display for ClockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClockMode::Wall => "wall",
            ClockMode::Event => "event",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fixed_and_separates_parts() {
        // The FNV-1a reference value for "a".
        assert_eq!(stable_hash(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    }

    #[test]
    fn wire_enums_round_trip() {
        for text in SubscriptionAction::ALL {
            assert_eq!(SubscriptionAction::parse(text).unwrap().as_str(), *text);
        }
        assert_eq!(EmailAction::parse("opened"), None);
    }
}

/// Formats event time as RFC 3339 (UTC, millisecond precision). Times
/// outside the years -9999 to 9999 are written as the epoch: every date
/// written keeps a four-digit year (a sign before it below year 0).
pub fn rfc3339(ms: Millis) -> String {
    use chrono::Datelike as _;
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .filter(|t| (-9999..=9999).contains(&t.year()))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Why a text is not an RFC 3339 time, in the words the rejections of
/// `invalid_time` have always used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc3339Error {
    /// A part could not be read (`year`, `offset hour`, ...).
    Component(&'static str),
    /// A `-` or `:` is missing.
    Literal,
    /// Text follows the offset.
    Trailing,
    /// A part was read but is out of range (`day`, `second`, ...).
    Range(&'static str),
}

impl std::fmt::Display for Rfc3339Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Component(part) => write!(f, "the '{part}' component could not be parsed"),
            Self::Literal => f.write_str("a character literal was not valid"),
            Self::Trailing => {
                f.write_str("unexpected trailing characters; the end of input was expected")
            }
            Self::Range(part) => write!(f, "{part} was not in range"),
        }
    }
}

impl std::error::Error for Rfc3339Error {}

/// Reads RFC 3339 text as event time: milliseconds since the epoch, any
/// finer fraction cut off toward zero (before 1970 too, so
/// `1969-12-31T23:59:59.9995Z` is 0, not -1).
///
/// The grammar is the one the event contract has always accepted, byte
/// for byte: `YYYY-MM-DD`, any one byte between date and time (`T`, `t`,
/// a space), `hh:mm:ss`, an optional fraction of any length (digits past
/// the ninth are ignored), then `Z`, `z` or `±hh:mm` with hh at most 23.
/// A leap second (`:60`) is accepted only where one can fall, the last
/// second of a month in UTC, and reads as the millisecond before the next
/// month. chrono's own RFC 3339 parser differs on the separator and on
/// leap seconds, so the grammar is spelled out here and chrono does the
/// calendar.
pub fn parse_rfc3339(s: &str) -> Result<Millis, Rfc3339Error> {
    use Rfc3339Error::{Component, Literal, Range, Trailing};
    let b = s.as_bytes();
    let mut i = 0;
    // `n` ASCII digits at `i`, as a number.
    let digits = |i: &mut usize, n: usize| -> Option<u32> {
        let d = b.get(*i..*i + n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *i += n;
        Some(d.iter().fold(0, |v, c| v * 10 + u32::from(c - b'0')))
    };
    let literal = |i: &mut usize, c: u8| {
        if b.get(*i) == Some(&c) {
            *i += 1;
            Ok(())
        } else {
            Err(Literal)
        }
    };
    let year = digits(&mut i, 4).ok_or(Component("year"))?;
    literal(&mut i, b'-')?;
    let month = digits(&mut i, 2)
        .filter(|m| *m != 0)
        .ok_or(Component("month"))?;
    literal(&mut i, b'-')?;
    let day = digits(&mut i, 2).ok_or(Component("day"))?;
    if i >= b.len() {
        return Err(Component("separator"));
    }
    i += 1;
    let hour = digits(&mut i, 2).ok_or(Component("hour"))?;
    literal(&mut i, b':')?;
    let minute = digits(&mut i, 2).ok_or(Component("minute"))?;
    literal(&mut i, b':')?;
    let mut second = digits(&mut i, 2).ok_or(Component("second"))?;
    let mut nano = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        nano = digits(&mut i, 1).ok_or(Component("subsecond"))? * 100_000_000;
        let mut unit = 10_000_000;
        while let Some(d) = digits(&mut i, 1) {
            nano += d * unit;
            unit /= 10;
        }
    }
    // Seconds east of UTC.
    let offset: i64 = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        sign => {
            let sign = match sign {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(Component("offset hour")),
            };
            i += 1;
            let h = digits(&mut i, 2)
                .filter(|h| *h <= 23)
                .ok_or(Component("offset hour"))?;
            literal(&mut i, b':')?;
            let m = digits(&mut i, 2).ok_or(Component("offset minute"))?;
            if m > 59 {
                return Err(Range("offset minute"));
            }
            sign * i64::from(h * 3600 + m * 60)
        }
    };
    if i != b.len() {
        return Err(Trailing);
    }
    let leap = second == 60;
    if leap {
        second = 59;
        nano = 999_999_999;
    }
    if month > 12 {
        return Err(Range("month"));
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(Range("day"))?;
    if hour > 23 {
        return Err(Range("hour"));
    }
    if minute > 59 {
        return Err(Range("minute"));
    }
    if second > 59 {
        return Err(Range("second"));
    }
    let Some(local) = date.and_hms_opt(hour, minute, second) else {
        return Err(Range("second"));
    };
    let utc = local.and_utc().timestamp() - offset;
    if leap {
        // The second after a leap second is midnight on the 1st, in UTC.
        let next = chrono::DateTime::<chrono::Utc>::from_timestamp(utc + 1, 0);
        let first = next.is_some_and(|t| chrono::Datelike::day(&t) == 1);
        if (utc + 1).rem_euclid(86_400) != 0 || !first {
            return Err(Range("second"));
        }
    }
    Ok(((i128::from(utc) * 1_000_000_000 + i128::from(nano)) / 1_000_000) as Millis)
}

/// Wall-clock time now.
pub fn wall_now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            super::rfc3339(1_794_304_800_000),
            "2026-11-10T10:00:00.000Z"
        );
        for (ms, text) in [
            (-1, "1969-12-31T23:59:59.999Z"),
            (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
            (-62_198_755_200_000, "-0001-01-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            // Past four-digit years: the epoch.
            (253_402_300_800_000, "1970-01-01T00:00:00.000Z"),
            (i64::MAX, "1970-01-01T00:00:00.000Z"),
            (i64::MIN, "1970-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(super::rfc3339(ms), text, "{ms}");
        }
    }

    #[test]
    fn parses_rfc3339_to_millis() {
        use super::Rfc3339Error::{Component, Literal, Range, Trailing};
        let t = 1_794_304_800_000; // 2026-11-10T10:00:00Z
        for (text, ms) in [
            ("2026-11-10T10:00:00Z", t),
            ("2026-11-10T15:30:00+05:30", t),
            ("2026-11-10T05:00:00-05:00", t),
            ("2026-11-10T10:00:00-00:00", t),
            ("2026-11-10t10:00:00z", t),
            ("2026-11-10 10:00:00Z", t),
            // Any one byte separates date and time.
            ("2026-11-10_10:00:00Z", t),
            ("2026-11-10T10:00:00.5Z", t + 500),
            ("2026-11-10T10:00:00.123456789Z", t + 123),
            ("2026-11-10T10:00:00.9999999999999Z", t + 999),
            ("2026-11-10T10:00:00.000+00:00", t),
            ("1969-12-31T23:59:59.999Z", -1),
            // Cut toward zero, as the nanosecond arithmetic always did.
            ("1969-12-31T23:59:59.9995Z", 0),
            ("1969-07-20T20:17:40Z", -14_182_940_000),
            ("0000-01-01T00:00:00Z", -62_167_219_200_000),
            ("2020-02-29T12:00:00Z", 1_582_977_600_000),
            // A leap second at the end of a UTC month, fraction ignored.
            ("2016-12-31T23:59:60Z", 1_483_228_799_999),
            ("2017-01-01T05:29:60.5+05:30", 1_483_228_799_999),
        ] {
            assert_eq!(super::parse_rfc3339(text), Ok(ms), "{text}");
        }
        let minus = "2026-11-10T10:00:00\u{2212}05:00";
        for (text, why) in [
            ("last tuesday", Component("year")),
            (" 2026-11-10T10:00:00Z", Component("year")),
            ("+2026-11-10T10:00:00Z", Component("year")),
            ("2026-00-10T10:00:00Z", Component("month")),
            ("2026-11-10", Component("separator")),
            ("2026-11-10T10:00:00", Component("offset hour")),
            ("2026-11-10T10:00:00+24:00", Component("offset hour")),
            (minus, Component("offset hour")),
            ("2026-11-10T10:00:00.Z", Component("subsecond")),
            ("2026-11-10T10:00:00+0530", Literal),
            ("2026-11-10T10:00:00Z ", Trailing),
            ("2026-11-10T10:00:00+05:60", Range("offset minute")),
            ("2026-13-10T10:00:00Z", Range("month")),
            ("2026-02-29T10:00:00Z", Range("day")),
            ("2026-11-00T10:00:00Z", Range("day")),
            ("2026-11-10T24:00:00Z", Range("hour")),
            ("2026-11-10T10:60:00Z", Range("minute")),
            ("2026-11-10T10:00:61Z", Range("second")),
            // A leap second anywhere but the end of a UTC month.
            ("2026-11-10T10:00:60Z", Range("second")),
            ("2016-12-31T23:59:60+01:00", Range("second")),
        ] {
            assert_eq!(super::parse_rfc3339(text), Err(why), "{text}");
        }
        assert_eq!(
            Component("offset hour").to_string(),
            "the 'offset hour' component could not be parsed"
        );
        assert_eq!(Literal.to_string(), "a character literal was not valid");
        assert_eq!(
            Trailing.to_string(),
            "unexpected trailing characters; the end of input was expected"
        );
        assert_eq!(Range("day").to_string(), "day was not in range");
    }
}
