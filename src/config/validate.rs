//! The checks serde cannot make: each refuses the config naming the key.

use crate::config::{key_err, Config, ConfigError};

impl Config {
    /// Checks values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        for (key, v) in [
            ("kafka.brokers", &k.brokers),
            ("kafka.group_id", &k.group_id),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.alerts_topic", &k.alerts_topic),
            ("kafka.triggers_topic", &k.triggers_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.outcomes_topic", &k.outcomes_topic),
            ("kafka.changelog_topic", &k.changelog_topic),
        ] {
            if v.trim().is_empty() {
                return Err(key_err(key, "must not be empty"));
            }
        }
        if self.outputs.format != crate::pipeline::output_format::Format::Json
            && self.schema_registry.url.is_none()
            && self.outputs.schema_ids.is_none()
        {
            return Err(key_err(
                "outputs.format",
                "json_schema and avro register their schemas: set schema_registry.url (or outputs.schema_ids, with the ids registered beforehand)",
            ));
        }
        if k.instance_id
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(key_err("kafka.instance_id", "must not be empty when set"));
        }
        if k.changelog_topic == k.input_topic {
            return Err(key_err(
                "kafka.changelog_topic",
                "must not be the input topic",
            ));
        }
        for (key, url, example) in [
            ("admin.advertised_url", &self.admin.advertised_url, ""),
            (
                "log.otlp_endpoint",
                &self.log.otlp_endpoint,
                " (OTLP over HTTP, e.g. http://otel-collector:4318/v1/traces)",
            ),
        ] {
            if url
                .as_deref()
                .is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                return Err(key_err(
                    key,
                    format!("must start with http:// or https://{example}"),
                ));
            }
        }
        k.check_security()
            .map_err(|(key, message)| key_err(&key, message))?;
        self.schema_registry
            .check()
            .map_err(|(key, message)| key_err(key, message))?;
        if k.batch_max_messages == 0 {
            return Err(key_err("kafka.batch_max_messages", "must be at least 1"));
        }
        // Every event of a quiet stream waits up to this long, and a stop
        // waits for the batch being gathered.
        if k.batch_linger_ms > 60_000 {
            return Err(key_err(
                "kafka.batch_linger_ms",
                format!(
                    "must be at most 60000 (a minute), got {}",
                    k.batch_linger_ms
                ),
            ));
        }
        if self.clock.sweep_interval_ms == 0 {
            return Err(key_err("clock.sweep_interval_ms", "must be at least 1"));
        }
        let f = &self.features;
        if f.half_lives_days.is_empty() {
            return Err(key_err(
                "features.half_lives_days",
                "needs at least one half-life",
            ));
        }
        for (i, h) in f.half_lives_days.iter().enumerate() {
            if !(h.is_finite() && *h > 0.0) {
                return Err(key_err(
                    &format!("features.half_lives_days[{i}]"),
                    format!("must be > 0, got {h}"),
                ));
            }
        }
        for (i, n) in f.activity_names.iter().enumerate() {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(key_err(
                    &format!("features.activity_names[{i}]"),
                    format!("must be letters, digits or _, got {n:?}"),
                ));
            }
        }
        if !(f.dedup_window_days.is_finite() && f.dedup_window_days >= 0.0) {
            return Err(key_err("features.dedup_window_days", "must be >= 0"));
        }
        let v = &self.validation;
        if v.base_currency.len() != 3 || !v.base_currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(key_err(
                "validation.base_currency",
                format!(
                    "must be an ISO 4217 code like EUR, got {:?}",
                    v.base_currency
                ),
            ));
        }
        for (c, r) in &v.currency_rates {
            if c.len() != 3 || !c.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(key_err(
                    &format!("validation.currency_rates.{c}"),
                    "must be an ISO 4217 code like USD",
                ));
            }
            if !(r.is_finite() && *r > 0.0) {
                return Err(key_err(
                    &format!("validation.currency_rates.{c}"),
                    format!("rate must be > 0, got {r}"),
                ));
            }
        }
        // Headers (reason, source, hash) need room beside the payload.
        const HEADER_ROOM: usize = 16 * 1024;
        match k.producer_message_max_bytes() {
            _ if k.dead_letter_max_bytes == 0 => {
                return Err(key_err("kafka.dead_letter_max_bytes", "must be at least 1"));
            }
            Some(limit) if k.dead_letter_max_bytes.saturating_add(HEADER_ROOM) > limit => {
                return Err(key_err(
                    "kafka.dead_letter_max_bytes",
                    format!(
                        "must leave {HEADER_ROOM} bytes for headers under the producer's message.max.bytes ({limit}), got {}",
                        k.dead_letter_max_bytes
                    ),
                ));
            }
            Some(_) => {}
            None => {
                return Err(key_err(
                    "kafka.producer_properties.message.max.bytes",
                    "must be a number of bytes",
                ));
            }
        }
        if v.max_message_bytes == 0 {
            return Err(key_err(
                "validation.max_message_bytes",
                "must be at least 1",
            ));
        }
        let p = &self.policy;
        for (key, x) in [
            ("policy.enter_threshold", p.enter_threshold),
            ("policy.exit_threshold", p.exit_threshold),
        ] {
            if let Some(x) = x.filter(|x| !(*x > 0.0 && *x < 1.0)) {
                return Err(key_err(key, format!("must be between 0 and 1, got {x}")));
            }
        }
        if let Some((enter, exit)) = self.policy.configured_thresholds() {
            if exit > enter {
                return Err(key_err(
                    "policy.exit_threshold",
                    format!("must not be above policy.enter_threshold ({enter})"),
                ));
            }
        }
        for (key, x) in [
            ("policy.cooldown_days", p.cooldown_days),
            ("policy.rescore_interval_hours", p.rescore_interval_hours),
            ("policy.rescore_stop_after_days", p.rescore_stop_after_days),
            (
                "model.reload_check_seconds",
                self.model.reload_check_seconds,
            ),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(key_err(key, format!("must be >= 0, got {x}")));
            }
        }
        if p.rescore_interval_hours <= 0.0 {
            return Err(key_err("policy.rescore_interval_hours", "must be > 0"));
        }
        if p.tiers.is_empty() {
            return Err(key_err("policy.tiers", "needs at least one tier"));
        }
        for (i, t) in p.tiers.iter().enumerate() {
            if i > 0 && t.min_probability >= p.tiers[i - 1].min_probability {
                return Err(key_err(
                    &format!("policy.tiers[{i}].min_probability"),
                    "tiers must be listed highest first",
                ));
            }
        }
        crate::pipeline::policy::check_rules(&p.campaigns, &p.tiers)
            .map_err(|(at, why)| key_err(&format!("policy.campaigns{at}"), why))?;
        let c = &p.contact;
        for (key, x) in [
            ("policy.contact.cooldown_days", c.cooldown_days),
            ("policy.contact.period_days", c.period_days),
            ("policy.outcome_window_days", p.outcome_window_days),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(key_err(key, format!("must be >= 0, got {x}")));
            }
        }
        if !(c.quiet_hours.is_empty() || c.quiet_hours.len() == 2)
            || c.quiet_hours.iter().any(|h| *h > 23)
        {
            return Err(key_err(
                "policy.contact.quiet_hours",
                format!(
                    "must be [start, end] in hours 0-23, or [] for none; got {:?}",
                    c.quiet_hours
                ),
            ));
        }
        if c.default_timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(key_err(
                "policy.contact.default_timezone",
                format!(
                    "not an IANA time zone name like Europe/Berlin: {:?}",
                    c.default_timezone
                ),
            ));
        }
        if !(0.0..=0.5).contains(&p.holdout.share) {
            return Err(key_err(
                "policy.holdout.share",
                format!("must be between 0 and 0.5, got {}", p.holdout.share),
            ));
        }
        if p.holdout.share == 0.0 {
            if let Some(e) = p.campaigns.iter().find_map(|r| r.experiment.as_ref()) {
                return Err(key_err(
                    "policy.holdout.share",
                    format!(
                        "experiment {:?} compares its variants with the holdout: set a share above 0 (0.1 is usual)",
                        e.name
                    ),
                ));
            }
        }
        let x = &self.experiments;
        for (key, v, lo, hi) in [
            ("experiments.alpha", x.alpha, 0.0, 0.5),
            ("experiments.minimum_lift", x.minimum_lift, 0.0, 1.0),
            ("experiments.power", x.power, 0.0, 1.0),
            ("experiments.srm_alpha", x.srm_alpha, 0.0, 1.0),
        ] {
            if !(v > lo && v < hi) {
                return Err(key_err(
                    key,
                    format!("must be between {lo} and {hi} (exclusive), got {v}"),
                ));
            }
        }
        if !(x.sequential_tuning.is_finite() && x.sequential_tuning >= 1.0) {
            return Err(key_err(
                "experiments.sequential_tuning",
                format!(
                    "must be a sample size of at least 1, got {}",
                    x.sequential_tuning
                ),
            ));
        }
        let g = &self.segments;
        if let Some(rfm) = &g.rfm {
            rfm.check().map_err(|why| {
                let (field, msg) = why.split_once(": ").unwrap_or(("", &why));
                key_err(&format!("segments.rfm.{field}"), msg)
            })?;
        }
        for (key, x) in [
            ("segments.new_days", g.new_days),
            ("segments.churned_after_days", g.churned_after_days),
            ("segments.reactivated_days", g.reactivated_days),
            ("segments.acquisition_cost", g.acquisition_cost),
            (
                "segments.expected_lifetime_years",
                g.expected_lifetime_years.unwrap_or(1.0),
            ),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(key_err(key, format!("must be >= 0, got {x}")));
            }
        }
        if !(g.margin > 0.0 && g.margin <= 1.0) {
            return Err(key_err(
                "segments.margin",
                format!("must be in (0, 1], got {}", g.margin),
            ));
        }
        if g.value_bands.iter().any(|x| !x.is_finite()) || g.value_bands[0] > g.value_bands[1] {
            return Err(key_err(
                "segments.value_bands",
                format!("must be ascending, got {:?}", g.value_bands),
            ));
        }
        if self.admin.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(key_err(
                "admin.listen",
                format!(
                    "must be an address like 127.0.0.1:9898, got {:?}",
                    self.admin.listen
                ),
            ));
        }
        if self
            .admin
            .read_token
            .as_ref()
            .is_some_and(|t| t.chars().count() < 16)
        {
            return Err(key_err(
                "admin.read_token",
                "must be at least 16 characters",
            ));
        }
        if self.service.stop_timeout_seconds == 0 {
            return Err(key_err(
                "service.stop_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.chars().count() < 16)
        {
            return Err(key_err(
                "admin.token",
                "must be at least 16 characters (or unset to disable mutating endpoints)",
            ));
        }
        Ok(())
    }
}
