//! The short soak: the whole local stack for twenty seconds under every fault
//! at once (link resets, transient sockets that vanish, Management API 500s
//! and 429s, DynamoDB throttles and conflicts, killed stream-processor
//! invocations). Every subscriber gets every message of its channel, nothing
//! stays in the tables, and no function panics. `make soak` runs the full one.

use airwave_tests::soak::{run, SoakPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_every_fault_at_once_nothing_is_lost_and_nothing_stays_behind() {
    let plan = SoakPlan::short();
    let report = run(&plan).await;
    println!("{report}");
    assert!(report.passed(), "{report}");
    // The faults were there: a soak that injected nothing proves nothing.
    assert!(report.link_resets > 0 && report.reconnected_subscribers > 0, "{report}");
    assert!(
        report.management_server_errors > 0 && report.management_throttles > 0,
        "{report}"
    );
    assert!(
        report.dynamodb_throttles > 0 && report.dynamodb_conflicts > 0,
        "{report}"
    );
    assert!(report.killed_stream_batches > 0, "{report}");
    assert!(report.transient_sockets > 0, "{report}");
}
