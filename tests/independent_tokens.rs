//! Tokens as a JWT library nobody here wrote makes and reads them
//! (Python's PyJWT, run by `comet_test_support::clients::pyjwt`): tokens
//! PyJWT signs (HS256, RS256, ES256, keys by `kid`) open subscriptions and
//! carry their user, expired ones and ones of another algorithm are 401;
//! tokens `TokenSigner` signs, PyJWT verifies with the public keys.
//!
//! Without PyJWT: reported as ignored, unless `COMET_CLIENT_TESTS=1` (CI
//! sets it), where it fails.

use comet_push::{
    protocol::{
        token::{Claims, TokenSigner, Tokens, VerifyingKey},
        SubscribeRoute,
    },
    Hub,
};
use comet_test_support::{bounded, client, clients::pyjwt, Adapter, Mount, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

fn main() {
    comet_test_support::tool::run(vec![comet_test_support::tool_test!(
        tokens_pyjwt_signs_open_subscriptions_and_pyjwt_reads_ours,
        [PyJwt]
    )]);
}

/// The HS256 secret `jwt_pyjwt.py` signs with.
const SECRET: &[u8] = b"a test secret of thirty-two bytes";
const ALGORITHMS: [&str; 3] = ["HS256", "RS256", "ES256"];

async fn tokens_pyjwt_signs_open_subscriptions_and_pyjwt_reads_ours() {
    const TEST: &str = "tokens_pyjwt_signs_open_subscriptions_and_pyjwt_reads_ours";
    let Some(minted) = pyjwt(TEST, "mint", &json!({})).await else {
        return;
    };
    let pem = |alg: &str, which: usize| minted["keys"][alg][which].as_str().unwrap().to_owned();
    let tokens = Tokens::new()
        .key("hs256", VerifyingKey::hs256(SECRET).unwrap())
        .key(
            "rs256",
            VerifyingKey::rs256_pem(pem("RS256", 1).as_bytes()).unwrap(),
        )
        .key(
            "es256",
            VerifyingKey::es256_pem(pem("ES256", 1).as_bytes()).unwrap(),
        )
        // Tokens without a kid: HS256 only, so that no RS256 or ES256 token
        // is ever checked as an HMAC (algorithm confusion).
        .default_key(VerifyingKey::hs256(SECRET).unwrap());
    let hub = Hub::builder().presence(true).build();
    let route = SubscribeRoute::long_poll()
        .authorizer(tokens.clone())
        .max_hold(Duration::ZERO);
    let server = TestServer::start(Adapter::Axum, &hub, vec![Mount::Subscribe("/t", route)]).await;
    let status = |token: &str, channel: &str| {
        let url = server.url(&format!("/t?channel={channel}&token={token}"));
        async move {
            bounded("poll", client().get(url).send())
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for alg in ALGORITHMS {
        let token = |which: &str| minted["tokens"][alg][which].as_str().unwrap().to_owned();
        assert_eq!(status(&token("valid"), "room/1").await, 200, "{alg}");
        assert_eq!(
            status(&token("valid"), "lobby").await,
            403,
            "{alg}: not granted"
        );
        assert_eq!(
            status(&token("expired"), "room/1").await,
            401,
            "{alg}: expired"
        );
        let claims = tokens.verify(&token("valid")).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("ann"), "{alg}");
        assert_eq!(claims.channels, ["room/*"]);
        assert_eq!(claims.info, Some(json!({"name": "Ann"})));
        let without_kid = status(&token("no_kid"), "room/1").await;
        assert_eq!(
            without_kid,
            if alg == "HS256" { 200 } else { 401 },
            "{alg} without kid"
        );
    }

    // Ours, read by PyJWT with the public keys.
    let claims = Claims::new(["room/*"], Duration::from_secs(60)).subject("bob");
    let signers = [
        ("HS256", TokenSigner::hs256(SECRET).unwrap()),
        (
            "RS256",
            TokenSigner::rs256_pem(pem("RS256", 0).as_bytes()).unwrap(),
        ),
        (
            "ES256",
            TokenSigner::es256_pem(pem("ES256", 0).as_bytes()).unwrap(),
        ),
    ];
    let mut ours = serde_json::Map::new();
    for (alg, signer) in signers {
        ours.insert(
            (*alg).into(),
            Value::String(signer.kid("k").sign(&claims).unwrap()),
        );
    }
    let keys = json!({
        "HS256": std::str::from_utf8(SECRET).unwrap(),
        "RS256": pem("RS256", 1),
        "ES256": pem("ES256", 1),
    });
    let read = pyjwt(TEST, "verify", &json!({ "tokens": ours, "keys": keys }))
        .await
        .unwrap();
    for alg in ALGORITHMS {
        assert_eq!(read[alg]["sub"], "bob", "{alg}: {}", read[alg]);
        assert_eq!(read[alg]["channels"], json!(["room/*"]), "{alg}");
        assert_eq!(read[alg]["exp"], claims.exp, "{alg}");
    }
}
