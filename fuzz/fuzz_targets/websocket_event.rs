//! The events API Gateway sends `$connect`, `$disconnect` and `$default`:
//! decoded the way the functions decode them, then the token and the
//! subprotocols read from them.
#![no_main]

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ApiGatewayWebsocketProxyRequest>(data) else {
        return;
    };
    let _ = airwave_shared::auth::token_from_request(&request);
    let _ = airwave_shared::auth::offered_subprotocols(&request);
    if let Some(body) = request.body.as_deref() {
        let _ = airwave_shared::handlers::parse_client_frame(body);
    }
});
