//! Tokens as `$connect` verifies them (HS256 with a known secret): any text
//! is an identity or a rejection with a reason.
#![no_main]

use std::sync::OnceLock;

use airwave_shared::auth::Authenticator;
use airwave_shared::Config;
use libfuzzer_sys::fuzz_target;

/// The secret the corpus's valid tokens are signed with.
const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!";

fn authenticator() -> &'static (Authenticator, tokio::runtime::Runtime) {
    static AUTHENTICATOR: OnceLock<(Authenticator, tokio::runtime::Runtime)> = OnceLock::new();
    AUTHENTICATOR.get_or_init(|| {
        let mut config = Config::default();
        config.jwt_secret = Some(airwave_shared::config::JwtSecret::new(SECRET));
        let authenticator = Authenticator::from_config(&config)
            .expect("a valid configuration")
            .expect("authentication on");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (authenticator, runtime)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let (authenticator, runtime) = authenticator();
    match runtime.block_on(authenticator.identify(token)) {
        Ok(identity) => assert!(!identity.user_id.is_empty()),
        Err(rejection) => assert!(!rejection.as_str().is_empty()),
    }
});
