//! The real binary, run as a user runs it from the repository.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root (the binary runs from there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `churn-alert ARGS` from the repository root with `env` set and no
/// `CHURN_ALERT_CONFIG` from the caller's environment.
pub fn churn_alert(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_churn-alert"));
    c.args(args)
        .current_dir(repo_root())
        .env_remove("CHURN_ALERT_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run churn-alert")
}

/// A finished command's stderr, as text.
pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
