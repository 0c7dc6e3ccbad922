//! The README's first command, small: every produced message is accounted
//! for, the malformed ones are dead-lettered, alerts are published, and
//! the experiment's readout is read back from the outcomes topic.

use churn_alert::offline::demo::{run, DemoOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_accounts_for_every_message() {
    let opts = DemoOptions {
        customers: 200,
        days: 150,
        seed: 3,
        partitions: 2,
        admin: "127.0.0.1:0".into(),
        all_alerts: false,
        keep_running: false,
    };
    let s = run(opts, CancellationToken::new()).await.unwrap();
    assert_eq!(
        s.consumed + s.duplicates + s.dlq,
        s.events_produced as u64,
        "every message applied, dropped as duplicate or dead-lettered: {s:?}"
    );
    assert_eq!(
        s.dlq, s.bad_produced as u64,
        "exactly the malformed messages are dead-lettered"
    );
    assert!(
        s.duplicates > 0,
        "the simulated redeliveries are recognised"
    );
    assert!(s.alerts > 0 && s.churners_alerted_ahead_14d > 0, "{s:?}");
    // The closed loop: the experiment's readout comes from the outcomes
    // topic, through the service's own reader.
    for e in &s.experiment {
        assert_eq!(e.experiment, "winback-offer");
        let arms: Vec<&str> = e.arms.iter().map(|a| a.arm.as_str()).collect();
        assert_eq!(arms, ["holdout", "discount", "reminder"]);
        assert_eq!(e.customers, e.arms.iter().map(|a| a.customers).sum::<u64>());
    }
    assert_eq!(s.better_variant, "discount");
}
