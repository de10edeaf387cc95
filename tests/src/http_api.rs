//! Requests to the HTTP API as its callers make them, for the tests, the
//! benchmark and the cost model.

use serde_json::Value;

/// POSTs the JSON `body` to `url` with `authorization` (`Key …`, `Bearer …`),
/// if any; answers the status and the body (a body that is not JSON comes
/// back as a JSON string).
pub async fn post_json(client: &reqwest::Client, url: &str, authorization: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("the HTTP API answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// [`post_json`] of a request that must succeed: answers the 200's body.
pub async fn post_ok(client: &reqwest::Client, url: &str, authorization: &str, body: &Value) -> Value {
    let (status, answer) = post_json(client, url, Some(authorization), &body.to_string()).await;
    assert_eq!(status, 200, "{url}: {answer}");
    answer
}
