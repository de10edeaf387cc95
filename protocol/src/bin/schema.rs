//! Prints the protocol's JSON Schema: `cargo run -p airwave-protocol --bin
//! airwave-protocol-schema > protocol/schema.json`.

fn main() {
    let schema = airwave_protocol::json_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => println!("{text}"),
        Err(error) => {
            eprintln!("cannot print the schema: {error}");
            std::process::exit(1);
        }
    }
}
