//! The latest alerts, for the status page (`GET /alerts/recent`): the
//! alert as published, newest first, with the wall-clock time it was
//! raised. Bounded; a replayed alert (same id) is not listed twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// How many alerts are kept.
pub const KEPT: usize = 50;

/// Shared by clones (the processor raises, the admin server reads).
#[derive(Clone, Default)]
pub struct RecentAlerts(Arc<Mutex<VecDeque<Value>>>);

impl RecentAlerts {
    /// Notes an alert (any serialisable form with an `alert_id`), raised at
    /// `raised_at` (RFC 3339, wall clock).
    pub fn note(&self, alert: &impl serde::Serialize, raised_at: String) {
        let Ok(Value::Object(mut a)) = serde_json::to_value(alert) else {
            return;
        };
        a.insert("raised_at".into(), Value::String(raised_at));
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = a.get("alert_id").cloned();
        if id.is_some() && q.iter().any(|x| x.get("alert_id") == id.as_ref()) {
            return;
        }
        q.push_front(Value::Object(a));
        q.truncate(KEPT);
    }

    /// Forgets a customer's alerts (on erasure).
    pub fn forget(&self, customer_id: &str) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.retain(|a| a.get("customer_id").and_then(Value::as_str) != Some(customer_id));
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Value> {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newest_first_bounded_and_once_per_id() {
        let r = RecentAlerts::default();
        for i in 0..(KEPT + 5) {
            r.note(&json!({"alert_id": format!("a{i}")}), "t".into());
        }
        r.note(&json!({"alert_id": format!("a{}", KEPT + 4)}), "t".into());
        let l = r.list();
        assert_eq!(l.len(), KEPT);
        assert_eq!(l[0]["alert_id"], format!("a{}", KEPT + 4));
        assert_eq!(l[0]["raised_at"], "t");
        assert_eq!(l[KEPT - 1]["alert_id"], "a5");
        r.note(&json!({"alert_id": "x", "customer_id": "c-9"}), "t".into());
        r.forget("c-9");
        assert!(r.list().iter().all(|a| a["alert_id"] != "x"), "erased");
    }
}
