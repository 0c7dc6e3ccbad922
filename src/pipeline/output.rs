//! What the core publishes beside alerts: retention triggers and alert
//! outcomes, and the small vocabularies (cause, group, retention) that
//! outputs and stored state share. The vocabularies are enums in the code
//! and their names in JSON and in stored state, so the stored layout is
//! the one strings had.

use serde::{Deserialize, Serialize};

/// An enum written as one of a fixed set of names (in JSON and bincode
/// alike); a name it does not know is refused when read.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub enum $name {
            $($(#[$vm])* $var,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$var,)+];

            /// Its name, as written.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $text,)+
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($text => Ok(Self::$var),)+
                    _ => Err(format!("unknown {} {s:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// What woke a score.
    Cause {
        /// An event of the customer.
        Event = "event",
        /// The customer's silence: re-scored with no event.
        Silence = "silence",
    }
}

named_enum! {
    /// Where an alerted customer stands in the campaign experiment.
    Group {
        /// Sent the campaign's trigger.
        Treated = "treated",
        /// Chosen for the control group: not sent, tracked alike.
        Holdout = "holdout",
        /// Not contacted (no consent, limits, no rule, or recovered while
        /// a trigger was held).
        NotContacted = "not_contacted",
    }
}

named_enum! {
    /// Why an alert got no trigger (the label of
    /// `churn_alert_triggers_suppressed_total`).
    Suppression {
        /// The customer's latest email status is unsubscribed.
        Unsubscribed = "unsubscribed",
        /// No marketing consent (at the alert, or when a held trigger was
        /// due).
        NoConsent = "no_consent",
        /// No campaign rule matched, or the rule's channel is `none`.
        NoContactRule = "no_contact_rule",
        /// Contacted within the cooldown.
        ContactCooldown = "contact_cooldown",
        /// The contact cap for the period is reached.
        ContactCap = "contact_cap",
        /// In the campaign's holdout (the control group).
        Holdout = "holdout",
        /// A trigger held by quiet hours was due after the customer had
        /// recovered.
        RecoveredWhileHeld = "recovered_while_held",
    }
}

impl Suppression {
    /// The experiment group an alert so suppressed (or not) falls in.
    pub fn group(blocked: Option<Self>) -> Group {
        match blocked {
            None => Group::Treated,
            Some(Self::Holdout) => Group::Holdout,
            Some(_) => Group::NotContacted,
        }
    }
}

named_enum! {
    /// Whether an alerted customer stayed.
    Retention {
        /// A purchase, session or activity after the alert.
        Retained = "retained",
        /// Nothing after the alert within the outcome window.
        Churned = "churned",
    }
}

/// A retention-campaign trigger as published on the triggers topic (JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Deterministic, derived from the alert id.
    pub trigger_id: String,
    pub alert_id: String,
    pub customer_id: String,
    pub campaign_id: String,
    /// email | sms | call | in_app
    pub channel: String,
    pub offer: Option<String>,
    pub risk_tier: String,
    pub probability: f64,
    pub customer_value: f64,
    pub segment: String,
    pub lifecycle: String,
    pub clv: f64,
    pub value_band: String,
    /// Event time of the alert (RFC 3339).
    pub as_of: String,
    /// When the trigger was released, if quiet hours held it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    /// The experiment the campaign runs, if any (schema version 2).
    #[serde(default)]
    pub experiment: Option<String>,
    /// The customer's variant in it.
    #[serde(default)]
    pub variant: Option<String>,
    /// The variant's message template id.
    #[serde(default)]
    pub template_id: Option<String>,
}

/// Whether an alerted customer stayed, published on the outcomes topic
/// `policy.outcome_window_days` after the alert (event time).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OutcomeRecord {
    /// Deterministic, derived from the alert id.
    pub outcome_id: String,
    pub alert_id: String,
    pub customer_id: String,
    /// `retained` (purchase, session or activity after the alert) or
    /// `churned`.
    pub outcome: Retention,
    /// `treated`, `holdout` or `not_contacted`.
    pub group: Group,
    pub campaign_id: Option<String>,
    pub alerted_at: String,
    pub decided_at: String,
    /// The experiment arm the alert was assigned to: a variant, or
    /// `holdout` (schema version 2). Kept when a held trigger was dropped
    /// (intention to treat).
    #[serde(default)]
    pub experiment: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    /// The share of every arm of the experiment when the alert was
    /// assigned (for the sample-ratio check).
    #[serde(default)]
    pub split: Option<std::collections::BTreeMap<String, f64>>,
    /// Guardrails: the customer unsubscribed from email, or complained,
    /// between the alert and the outcome.
    #[serde(default)]
    pub unsubscribed: bool,
    #[serde(default)]
    pub complained: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_and_read_back_and_unknown_names_refused() {
        for g in [Group::Treated, Group::Holdout, Group::NotContacted] {
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(json, format!("\"{}\"", g.as_str()));
            assert_eq!(serde_json::from_str::<Group>(&json).unwrap(), g);
            // In stored state, the same bytes as the string had.
            let stored = bincode::serialize(&g).unwrap();
            assert_eq!(stored, bincode::serialize(g.as_str()).unwrap());
            assert_eq!(bincode::deserialize::<Group>(&stored).unwrap(), g);
        }
        assert!(serde_json::from_str::<Retention>("\"maybe\"").is_err());
        assert_eq!(Cause::Silence.to_string(), "silence");
    }
}
