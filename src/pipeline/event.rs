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

/// Formats event time as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
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
    }
}
