//! template.yaml as the local gateway reads it: any text is a stack model or
//! an error, and a model's every function gets an environment or an error.
#![no_main]

use airwave_gateway::{LocalNames, StackModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = StackModel::from_yaml(text) else {
        return;
    };
    let names = LocalNames::default();
    for function in model.functions.values() {
        if let Some(binary) = &function.binary {
            let _ = model.function_environment(binary, &names, "http://127.0.0.1:3001/local");
        }
    }
});
