//! The policy's memory of a customer: alert hysteresis, campaign
//! contacts, triggers held for quiet hours and alerts awaiting their
//! outcome. Part of each customer's stored state.

use serde::{Deserialize, Serialize};

use crate::pipeline::event::Millis;
use crate::pipeline::output::{Group, Retention, Trigger};

/// Where a customer stands with respect to alerts (hysteresis and cooldown).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct AlertState {
    /// Above the enter threshold and not yet below the exit threshold.
    pub active: bool,
    /// How many alerts were published for this customer.
    pub count: u32,
    /// Event time of the latest alert.
    pub last_alert_at: Option<Millis>,
    /// Latest probability computed.
    pub last_probability: f64,
    /// When it was computed.
    pub last_scored_at: Millis,
}

/// What the campaign side remembers about a customer.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ContactState {
    /// Event times of triggers published, oldest first (kept for the cap
    /// period).
    pub sent: Vec<Millis>,
    /// A trigger held back by quiet hours, published at `release_at`.
    pub held: Option<HeldTrigger>,
    /// The latest alert, until its outcome is published.
    pub awaiting: Option<Awaiting>,
    /// The latest alerts, newest last (at most [`ALERT_HISTORY`]).
    pub history: Vec<PastAlert>,
}

/// How many past alerts a customer's state keeps.
pub const ALERT_HISTORY: usize = 10;

/// One past alert, for the operator's view.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PastAlert {
    pub alert_id: String,
    pub at: Millis,
    pub probability: f64,
    pub risk_tier: String,
    pub campaign_id: Option<String>,
    pub group: Group,
    /// Decided once the outcome window passed.
    pub outcome: Option<Retention>,
}

/// A trigger waiting for the customer's quiet hours to end.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HeldTrigger {
    pub release_at: Millis,
    /// The trigger as it will be published (stored as its JSON text).
    #[serde(with = "json_text")]
    pub trigger: Trigger,
}

/// An alert whose outcome is due at `due`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Awaiting {
    pub alert_id: String,
    pub alerted_at: Millis,
    pub due: Millis,
    /// The campaign chosen (also for holdout customers, who do not get it).
    pub campaign_id: Option<String>,
    /// Not contacted when suppressed or no rule applied.
    pub group: Group,
}

/// A held trigger is stored as the JSON it will be published as (the
/// layout state had before the trigger was typed); text that does not
/// parse is refused with the state, as corrupt.
mod json_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::pipeline::output::Trigger;

    pub fn serialize<S: Serializer>(t: &Trigger, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(t).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Trigger, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> Trigger {
        serde_json::from_value(serde_json::json!({
            "trigger_id": "t", "alert_id": "a", "customer_id": "c", "campaign_id": "win-back",
            "channel": "email", "offer": null, "risk_tier": "high", "probability": 0.8,
            "customer_value": 10.0, "segment": "loyal", "lifecycle": "at_risk", "clv": 50.0,
            "value_band": "mid", "as_of": "2026-09-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn stored_contact_state_has_the_layout_strings_had() {
        let held = HeldTrigger {
            release_at: 7,
            trigger: trigger(),
        };
        let stored = bincode::serialize(&held).unwrap();
        let text = serde_json::to_string(&held.trigger).unwrap();
        assert_eq!(stored, bincode::serialize(&(7i64, &text)).unwrap());
        assert_eq!(bincode::deserialize::<HeldTrigger>(&stored).unwrap(), held);
        // Text that is not a trigger is refused, not unwrapped.
        let bad = bincode::serialize(&(7i64, "{not json")).unwrap();
        assert!(bincode::deserialize::<HeldTrigger>(&bad).is_err());
        let past = PastAlert {
            alert_id: "a".into(),
            at: 1,
            probability: 0.5,
            risk_tier: "high".into(),
            campaign_id: None,
            group: Group::NotContacted,
            outcome: Some(Retention::Churned),
        };
        let as_strings = (
            "a",
            1i64,
            0.5f64,
            "high",
            None::<String>,
            "not_contacted",
            Some("churned"),
        );
        assert_eq!(
            bincode::serialize(&past).unwrap(),
            bincode::serialize(&as_strings).unwrap()
        );
    }
}
