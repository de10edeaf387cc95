//! `airwave-soak` (`make soak`): the fault-injecting soak of the whole local
//! stack (see `airwave_tests::soak`), with the full plan unless told
//! otherwise. Prints its figures and exits 1 if any promise failed. Needs the
//! DynamoDB-compatible server `infra/with-moto.sh` starts.
//!
//! Options (environment): `SOAK_SUBSCRIBERS` (default 1000), `SOAK_SECONDS`
//! (default 180), `SOAK_CHANNELS` (default 20), `SOAK_SEED` (default 15).

use std::process::ExitCode;
use std::time::Duration;

use airwave_tests::soak::{run, SoakPlan};

fn setting(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number, not {value:?}")),
        Err(_) => Ok(default),
    }
}

fn plan() -> Result<SoakPlan, String> {
    let full = SoakPlan::full();
    Ok(SoakPlan {
        subscribers: setting("SOAK_SUBSCRIBERS", full.subscribers as u64)? as usize,
        duration: Duration::from_secs(setting("SOAK_SECONDS", full.duration.as_secs())?),
        channels: setting("SOAK_CHANNELS", full.channels as u64)?.max(1) as usize,
        seed: setting("SOAK_SEED", full.seed)?,
        ..full
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    // Faults are the point here: only errors are worth a line.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(std::io::stderr)
        .init();
    let plan = match plan() {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("airwave-soak: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("airwave-soak: could not raise the open files limit: {error}");
    }
    eprintln!(
        "soak: {} steady subscribers on {} channels, {} s of publishing",
        plan.subscribers,
        plan.channels,
        plan.duration.as_secs()
    );
    let report = run(&plan).await;
    println!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
