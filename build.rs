//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler, so no
//! system `protoc` is needed; and stamps the commit the binary was built
//! from (`--version`, `churn_alert_build_info`).

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["churn/v1/events.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    stamp_commit();
    Ok(())
}

/// `CHURN_ALERT_COMMIT` from the environment (the image build passes it:
/// its context has no `.git`), else the checkout's `HEAD`, else "unknown".
fn stamp_commit() {
    println!("cargo:rerun-if-env-changed=CHURN_ALERT_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("CHURN_ALERT_COMMIT")
        .ok()
        .map(|c| c.trim().chars().take(12).collect::<String>())
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Built again when HEAD moves: HEAD itself (a checkout) and the
            // branch it names (a commit), wherever git keeps them.
            for path in ["HEAD", "packed-refs"]
                .into_iter()
                .map(String::from)
                .chain(git(&["symbolic-ref", "-q", "HEAD"]))
            {
                if let Some(p) = git(&["rev-parse", "--git-path", &path]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CHURN_ALERT_COMMIT={commit}");
}
