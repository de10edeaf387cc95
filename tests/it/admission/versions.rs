//! The protocol version in the handshake, over real sockets through the local
//! gateway: the version a client offers is selected, and a client offering
//! only versions this server does not speak is refused with 426 before
//! anything is read or written.

use airwave_gateway::GatewayOptions;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;

use super::handshake;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offered_version_is_selected_and_an_unknown_one_is_refused_with_426() {
    let stack = LocalStack::start(TestTables::create().await, GatewayOptions::default()).await;

    assert_eq!(
        handshake(&stack, Some("airwave.v1")).await,
        Ok(Some("airwave.v1".to_owned()))
    );
    // Offered beside a token, or beside a version this server does not speak.
    assert_eq!(
        handshake(&stack, Some("airwave.v2, airwave.v1")).await,
        Ok(Some("airwave.v1".to_owned()))
    );
    // The name from before versions is version 1.
    assert_eq!(handshake(&stack, Some("airwave")).await, Ok(Some("airwave".to_owned())));
    // No offer at all (a command-line client): version 1, no answer.
    assert_eq!(handshake(&stack, None).await, Ok(None));
    // Those four are closed: wait for their records to go.
    for _ in 0..100 {
        if stack.tables.stored_connection_ids().await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stack.tables.stored_connection_ids().await.is_empty());

    assert_eq!(
        handshake(&stack, Some("airwave.v2")).await,
        Err((426, "unsupported_protocol".to_owned()))
    );
    // Refused before anything was written.
    assert!(stack.tables.stored_connection_ids().await.is_empty());
}
