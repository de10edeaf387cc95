//! The committed schema is the one these types generate, so other-language
//! clients checked against it are checked against the server.

use std::path::PathBuf;

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema.json");
    let committed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        committed,
        airwave_protocol::json_schema(),
        "protocol/schema.json is stale: run `make schema`"
    );
}
