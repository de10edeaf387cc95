//! Tokens from an identity provider: RS256 and ES256 tokens verified against
//! a JWKS document this test serves over real HTTP, with keys it generates;
//! rotation picked up with one rate-limited refetch; cached keys serving while
//! the provider is down; every kind of bad token refused with 401 by the
//! real `$connect` handler; and tokens of a shared provider (a Cognito user
//! pool, an Auth0 tenant) accepted only for this deployment's audience, with
//! a configuration that would accept any refused at start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airwave_shared::auth::{Authenticator, TokenRejection};
use airwave_shared::config::{self as config_names, AuthSettings, JwtSecret};
use airwave_shared::handlers::handle_connect;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{Config, ConnectionStore};
use airwave_tests::{connect_event_with_token, TestTables};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISSUER: &str = "https://idp.example/pool";
const AUDIENCE: &str = "airwave-app";

/// A signing key the identity provider publishes.
struct ProviderKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (bytes[0], bytes[1] as usize);
    let (length, header) = if first < 0x80 {
        (first, 2)
    } else {
        let octets = first & 0x7f;
        let length = bytes[2..2 + octets].iter().fold(0usize, |n, b| (n << 8) | *b as usize);
        (length, 2 + octets)
    };
    (tag, &bytes[header..header + length], &bytes[header + length..])
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo: its third field.
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = der_element(pkcs8);
    let (_, _, rest) = der_element(info); // version
    let (_, _, rest) = der_element(rest); // algorithm
    let (tag, key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "the private key is an OCTET STRING");
    key.to_vec()
}

fn rsa_key(kid: &str) -> ProviderKey {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = pair.as_der().unwrap();
    let public = pair.public_key();
    ProviderKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(&pkcs1_of(der.as_ref())),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }),
    }
}

fn ec_key(kid: &str) -> ProviderKey {
    let pair =
        aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let der = pair.to_pkcs8v1().unwrap();
    // An uncompressed point: 0x04, then x and y.
    let point = pair.public_key().as_ref().to_vec();
    ProviderKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(der.as_ref()),
        jwk: json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

impl ProviderKey {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).unwrap()
    }
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": epoch_seconds_now() + 600, "iss": ISSUER, "aud": AUDIENCE})
}

/// An identity provider's JWKS endpoint: real HTTP on loopback, serving
/// whatever `keys` holds, counting requests; `down` makes it refuse.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(keys));
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = json!({ "keys": *served.lock().unwrap() }).to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        JwksServer {
            url,
            keys,
            requests,
            task,
        }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.task.abort();
    }
}

fn authenticator(url: &str, refetch_seconds: u64) -> Authenticator {
    let config = Config {
        auth: AuthSettings {
            jwks_url: Some(url.to_owned()),
            issuer: Some(ISSUER.to_owned()),
            audience: vec![AUDIENCE.to_owned()],
            jwks_min_refetch_seconds: refetch_seconds,
            ..AuthSettings::default()
        },
        ..Config::default()
    };
    Authenticator::from_config(&config).unwrap().unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_verified_against_the_providers_jwks_over_http() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    let provider = JwksServer::start(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
    let tables = TestTables::create_with(|config| {
        config.auth.jwks_url = Some(provider.url.clone());
        config.auth.issuer = Some(ISSUER.to_owned());
        config.auth.audience = vec![AUDIENCE.to_owned()];
    })
    .await;
    // Built once, as the connect function does at cold start, and used for both.
    let authenticator = airwave_tests::authenticator(&tables.config);
    for (id, key, user) in [("rsa=", &rsa, "alice"), ("ec=", &ec, "bob")] {
        let event = connect_event_with_token(id, "198.51.100.7", &key.sign(&claims(user)));
        let response = handle_connect(&tables.store, authenticator.as_ref(), None, &tables.config, event)
            .await
            .unwrap();
        assert_eq!(response.status_code, 200, "{id}");
        let record = tables.store.get_connection(id).await.unwrap().unwrap();
        assert_eq!(record.user_id.as_deref(), Some(user));
    }
    assert_eq!(provider.requests(), 1, "the keys are fetched once and kept");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_with_one_refetch_and_made_up_key_ids_cost_nothing() {
    let (old, new) = (rsa_key("2026-11"), rsa_key("2026-12"));
    let provider = JwksServer::start(vec![old.jwk.clone()]).await;
    let authenticator = authenticator(&provider.url, 1);
    assert_eq!(authenticator.verify(&old.sign(&claims("u"))).await, Ok("u".to_owned()));
    assert_eq!(provider.requests(), 1);

    // The provider rotates; a token with the new key id arrives.
    provider.publish(vec![old.jwk.clone(), new.jwk.clone()]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(authenticator.verify(&new.sign(&claims("u"))).await, Ok("u".to_owned()));
    assert_eq!(provider.requests(), 2, "one refetch for the unknown key id");

    // Within the refetch interval, unknown ids are refused without a request.
    let stranger = rsa_key("made-up");
    for _ in 0..5 {
        assert_eq!(
            authenticator.verify(&stranger.sign(&claims("u"))).await,
            Err(TokenRejection::UnknownKey)
        );
    }
    assert_eq!(provider.requests(), 2);
    provider.stop();
}

#[tokio::test]
async fn with_the_provider_unreachable_known_keys_still_verify_and_new_ones_fail_closed() {
    let known = ec_key("known");
    let provider = JwksServer::start(vec![known.jwk.clone()]).await;
    let authenticator = authenticator(&provider.url, 1);
    assert!(authenticator.verify(&known.sign(&claims("u"))).await.is_ok());
    provider.stop();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let unknown = ec_key("rotated-in-while-down");
    assert_eq!(
        authenticator.verify(&unknown.sign(&claims("u"))).await,
        Err(TokenRejection::UnknownKey)
    );
    assert_eq!(
        authenticator.verify(&known.sign(&claims("u"))).await,
        Ok("u".to_owned())
    );
}

#[tokio::test]
async fn every_kind_of_bad_token_gets_401_from_connect_and_writes_nothing() {
    let key = rsa_key("k1");
    let provider = JwksServer::start(vec![key.jwk.clone()]).await;
    let tables = TestTables::create_with(|config| {
        config.auth.jwks_url = Some(provider.url.clone());
        config.auth.issuer = Some(ISSUER.to_owned());
        config.auth.audience = vec![AUDIENCE.to_owned()];
    })
    .await;
    let now = epoch_seconds_now();
    let mut forged = key.sign(&claims("mallory"));
    // Same header and claims, a signature made by another key.
    let other = rsa_key("k1").sign(&claims("mallory"));
    forged.truncate(forged.rfind('.').unwrap());
    forged.push_str(&other[other.rfind('.').unwrap()..]);
    let hs256 = encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(b"a-shared-secret-of-32-bytes-long!!"),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims("mallory").to_string())
    );
    let cases = [
        (
            "wrong issuer",
            key.sign(&json!({"sub": "m", "exp": now + 600, "iss": "https://evil.example", "aud": AUDIENCE})),
            "token_wrong_issuer",
        ),
        (
            "wrong audience",
            key.sign(&json!({"sub": "m", "exp": now + 600, "iss": ISSUER, "aud": "another-app"})),
            "token_wrong_audience",
        ),
        ("alg none", none, "token_malformed"),
        ("HS256 where only a JWKS is configured", hs256, "token_wrong_algorithm"),
        ("forged signature", forged, "token_bad_signature"),
        (
            "expired",
            key.sign(&json!({"sub": "m", "exp": now - 3_600, "iss": ISSUER, "aud": AUDIENCE})),
            "token_expired",
        ),
    ];
    for (n, (case, token, reason)) in cases.into_iter().enumerate() {
        let id = format!("bad-{n}=");
        let event = connect_event_with_token(&id, "198.51.100.8", &token);
        let response = tables.connect(event).await;
        assert_eq!(response.status_code, 401, "{case}");
        let body = format!("{:?}", response.body);
        assert!(body.contains(reason), "{case}: {body}");
        assert!(tables.store.get_connection(&id).await.unwrap().is_none(), "{case}");
    }
}

#[tokio::test]
async fn hs256_and_a_jwks_can_be_on_together() {
    let key = ec_key("e1");
    let provider = JwksServer::start(vec![key.jwk.clone()]).await;
    let secret = "a-shared-secret-of-32-bytes-long!!";
    let config = Config {
        jwt_secret: Some(JwtSecret::new(secret)),
        auth: AuthSettings {
            jwks_url: Some(provider.url.clone()),
            issuer: Some(ISSUER.to_owned()),
            audience: vec![AUDIENCE.to_owned()],
            ..AuthSettings::default()
        },
        ..Config::default()
    };
    let authenticator = Authenticator::from_config(&config).unwrap().unwrap();
    // One issuer and audience for every token: the service's own carry them too.
    let service_token = airwave_tests::signed_token(
        secret,
        &json!({"sub": "svc", "exp": epoch_seconds_now() + 60, "iss": ISSUER, "aud": AUDIENCE}),
    );
    assert_eq!(authenticator.verify(&service_token).await, Ok("svc".to_owned()));
    assert_eq!(
        authenticator.verify(&key.sign(&claims("user"))).await,
        Ok("user".to_owned())
    );
}

/// The configuration the connect function reads from `variables`.
fn config_from(variables: &[(&str, &str)]) -> Result<Config, airwave_shared::Error> {
    Config::from_lookup(|name| {
        variables
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| (*value).to_owned())
    })
}

/// `$connect` with `token` through the real handler: its status and body.
async fn connect_with(tables: &TestTables, id: &str, token: &str) -> (i64, String) {
    let response = tables
        .connect(connect_event_with_token(id, "198.51.100.9", token))
        .await;
    (response.status_code, format!("{:?}", response.body))
}

#[tokio::test]
async fn a_shared_providers_tokens_are_accepted_only_for_this_deployments_audience() {
    let key = rsa_key("pool-key");
    let provider = JwksServer::start(vec![key.jwk.clone()]).await;
    // The settings an operator writes, read as the connect function reads them.
    let settings = config_from(&[
        (config_names::JWKS_URL, &provider.url),
        (config_names::JWT_ISSUER, ISSUER),
        (config_names::JWT_AUDIENCE, &format!("{AUDIENCE}, airwave-admin")),
    ])
    .unwrap();
    let tables = TestTables::create_with(|config| config.auth = settings.auth.clone()).await;
    let token = |extra: Value| {
        let mut claims = json!({"sub": "alice", "exp": epoch_seconds_now() + 600, "iss": ISSUER});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        key.sign(&claims)
    };
    let cases = [
        // Cognito's access tokens: no aud, the app client in client_id.
        (
            "access token of this app",
            json!({"token_use": "access", "client_id": AUDIENCE}),
            None,
        ),
        (
            "access token of the second app",
            json!({"token_use": "access", "client_id": "airwave-admin"}),
            None,
        ),
        // Cognito's ID tokens, and Auth0's access tokens: the audience in aud.
        (
            "ID token of this app",
            json!({"token_use": "id", "aud": AUDIENCE}),
            None,
        ),
        (
            "aud list naming this app",
            json!({"aud": ["https://other.example/api", AUDIENCE]}),
            None,
        ),
        (
            "access token of another app of the same pool",
            json!({"token_use": "access", "client_id": "someone-elses-app"}),
            Some("token_wrong_audience"),
        ),
        (
            "ID token of another app",
            json!({"token_use": "id", "aud": "someone-elses-app"}),
            Some("token_wrong_audience"),
        ),
        (
            "client_id outside an access token",
            json!({"token_use": "id", "client_id": AUDIENCE}),
            Some("token_wrong_audience"),
        ),
        ("no audience at all", json!({}), Some("token_wrong_audience")),
    ];
    for (n, (case, claims, refusal)) in cases.into_iter().enumerate() {
        let id = format!("aud-{n}=");
        let (status, body) = connect_with(&tables, &id, &token(claims)).await;
        let stored = tables.store.get_connection(&id).await.unwrap();
        match refusal {
            None => {
                assert_eq!(status, 200, "{case}: {body}");
                assert_eq!(
                    stored.and_then(|record| record.user_id).as_deref(),
                    Some("alice"),
                    "{case}"
                );
            }
            Some(reason) => {
                assert_eq!(status, 401, "{case}");
                assert!(body.contains(reason), "{case}: {body}");
                assert!(stored.is_none(), "{case}");
            }
        }
    }
}

#[test]
fn a_jwks_without_an_issuer_or_an_audience_refuses_to_start_and_names_what_is_missing() {
    let url = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example/.well-known/jwks.json";
    let issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example";
    let refusal = |variables: &[(&str, &str)]| config_from(variables).unwrap_err().to_string();
    let message = refusal(&[(config_names::JWKS_URL, url)]);
    assert!(message.contains("AIRWAVE_JWT_ISSUER"), "{message}");
    let message = refusal(&[(config_names::JWKS_URL, url), (config_names::JWT_AUDIENCE, "app")]);
    assert!(message.contains("AIRWAVE_JWT_ISSUER"), "{message}");
    let message = refusal(&[(config_names::JWKS_URL, url), (config_names::JWT_ISSUER, issuer)]);
    assert!(message.contains("AIRWAVE_JWT_AUDIENCE"), "{message}");
    assert!(message.contains("AIRWAVE_JWT_ALLOW_ANY_AUDIENCE=true"), "{message}");
}

#[tokio::test]
async fn the_named_opt_out_accepts_any_audience_but_never_another_issuer() {
    let key = ec_key("tenant-key");
    let provider = JwksServer::start(vec![key.jwk.clone()]).await;
    let settings = config_from(&[
        (config_names::JWKS_URL, &provider.url),
        (config_names::JWT_ISSUER, ISSUER),
        (config_names::JWT_ALLOW_ANY_AUDIENCE, "true"),
    ])
    .unwrap();
    let tables = TestTables::create_with(|config| config.auth = settings.auth.clone()).await;
    let now = epoch_seconds_now();
    let accepted = [
        json!({"sub": "u", "exp": now + 600, "iss": ISSUER, "aud": "someone-elses-app"}),
        json!({"sub": "u", "exp": now + 600, "iss": ISSUER, "token_use": "access", "client_id": "any-client"}),
        json!({"sub": "u", "exp": now + 600, "iss": ISSUER}),
    ];
    for (n, claims) in accepted.iter().enumerate() {
        let (status, body) = connect_with(&tables, &format!("any-{n}="), &key.sign(claims)).await;
        assert_eq!(status, 200, "{claims}: {body}");
    }
    let other_issuer = json!({"sub": "u", "exp": now + 600, "iss": "https://evil.example", "aud": AUDIENCE});
    let (status, body) = connect_with(&tables, "other-issuer=", &key.sign(&other_issuer)).await;
    assert_eq!(status, 401);
    assert!(body.contains("token_wrong_issuer"), "{body}");
}
