//! Tokens (JWT) for clients that cannot send the app's cookies or headers:
//! pages of other origins, whose `EventSource` sends neither, and services
//! that publish. Behind the `jwt` feature.
//!
//! The app mints a token with [`TokenSigner`] for a user and the channels
//! they may read (names, or prefixes ending in `*`), and hands it to the
//! page; comet.js sends it as `token=` (or `Authorization: Bearer`), and a
//! route that verifies with [`Tokens`] grants those channels, to that user,
//! until the token's `exp`: a live stream ends then with an end item
//! (`expired`), and the client comes back with a fresh token and its cursor.
//!
//! ```
//! use comet_push::protocol::token::{Claims, TokenSigner, Tokens, VerifyingKey};
//! use comet_push::SubscribeRoute;
//! use std::time::Duration;
//!
//! let secret = b"a secret of at least 32 bytes, really!!";
//! let signer = TokenSigner::hs256(secret).unwrap().kid("2026-12");
//! let token = signer
//!     .sign(&Claims::new(["room/*"], Duration::from_secs(600)).subject("u-42"))
//!     .unwrap();
//! // Keys by `kid`: tokens signed with the old key stay valid until they expire.
//! let tokens = Tokens::new()
//!     .key("2026-12", VerifyingKey::hs256(secret).unwrap())
//!     .key("2026-11", VerifyingKey::hs256(b"last month's secret, 32 bytes long!").unwrap());
//! let route = SubscribeRoute::sse().authorizer(tokens.clone());
//! assert_eq!(tokens.verify(&token).unwrap().sub.as_deref(), Some("u-42"));
//! ```

use crate::{
    policy::{Access, Authorization},
    publish::AuthorizePublish,
    Authorize, ChannelName, ErrorCode, Identity, ProtocolError,
};
use http::{header, request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// What comet reads in a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token is for (their subscriptions are identified, for
    /// presence and revocation); none: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// When it expires, in seconds since the Unix epoch. Required.
    pub exp: u64,
    /// The channels it grants: names, or prefixes ending in `*` (`room/*`
    /// grants `room/1`; `*` grants every channel).
    #[serde(default)]
    pub channels: Vec<String>,
    /// What others may see of the user (a JSON object, for presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// The token may publish to its channels too (a service's), not only
    /// subscribe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish: bool,
}

impl Claims {
    /// Claims granting `channels` for `lifetime` from now, to nobody in particular.
    pub fn new<I>(channels: I, lifetime: Duration) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let exp = SystemTime::now()
            .checked_add(lifetime)
            .unwrap_or(SystemTime::now())
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            sub: None,
            exp,
            channels: channels.into_iter().map(Into::into).collect(),
            info: None,
            publish: false,
        }
    }

    /// For the user `sub` (the `sub` claim).
    pub fn subject(mut self, sub: impl Into<String>) -> Self {
        self.sub = Some(sub.into());
        self
    }

    /// With `info` (a JSON object) others may see of the user.
    pub fn info(mut self, info: serde_json::Value) -> Self {
        self.info = Some(info);
        self
    }

    /// Allows publishing to the channels too.
    pub fn publisher(mut self) -> Self {
        self.publish = true;
        self
    }

    /// Whether the claims grant `channel`.
    pub fn grants(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => channel == pattern,
            })
    }

    /// The identity the claims name, if any.
    pub fn identity(&self) -> Result<Option<Identity>, ProtocolError> {
        let Some(sub) = &self.sub else {
            return Ok(None);
        };
        let invalid = |e: comet_core::InvalidIdentity| {
            ProtocolError::unauthorized(format!("the token's subject is unusable: {e}"))
        };
        let mut identity = Identity::new(sub.as_str()).map_err(invalid)?;
        if let Some(info) = &self.info {
            identity = identity.with_info(info.clone()).map_err(invalid)?;
        }
        Ok(Some(identity))
    }

    /// When the token expires (at the latest the end of year 9999: an `exp`
    /// past what a clock can hold must not overflow it).
    pub fn expiry(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp.min(LAST_EXPIRY))
    }
}

/// 9999-12-31T23:59:59Z, in seconds since the Unix epoch.
const LAST_EXPIRY: u64 = 253_402_300_799;

/// Why a key could not be read, or a token signed.
#[derive(Debug)]
pub struct TokenError(jsonwebtoken::errors::Error);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TokenError {}

/// A key that verifies tokens of one algorithm (tokens of any other are
/// refused: no algorithm confusion).
#[derive(Clone)]
pub struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl VerifyingKey {
    /// HMAC-SHA256 with a shared secret (use 32 bytes or more).
    pub fn hs256(secret: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret).map_err(TokenError)?,
        })
    }

    /// RSA (PKCS#1 v1.5, SHA-256) with a public key in PEM.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            algorithm: Algorithm::RS256,
            key: DecodingKey::from_rsa_pem(pem).map_err(TokenError)?,
        })
    }

    /// ECDSA P-256 with SHA-256, with a public key in PEM.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            algorithm: Algorithm::ES256,
            key: DecodingKey::from_ec_pem(pem).map_err(TokenError)?,
        })
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Verifies tokens, as a subscribe route's [`Authorize`] or a publish
/// route's [`AuthorizePublish`]: keys by `kid`, so that a new key can sign
/// while tokens of the old one are still out there.
///
/// A subscribe request carries its token as `token=` or in
/// `Authorization: Bearer`; every channel it asks for must be granted, and
/// the subscription gets the token's subject and ends at its `exp`. A
/// publish needs `Authorization: Bearer` with a token that grants the
/// channel and says `"publish": true`. A missing, malformed, unknown-key or
/// expired token is a 401 `unauthorized`; a channel the token does not
/// grant, a 403 `forbidden`.
#[derive(Clone, Default)]
pub struct Tokens {
    keys: Arc<Vec<(Option<String>, VerifyingKey)>>,
}

impl Tokens {
    /// No keys yet: every token is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies tokens whose header names `kid` with `key`.
    pub fn key(self, kid: impl Into<String>, key: VerifyingKey) -> Self {
        self.with(Some(kid.into()), key)
    }

    /// Verifies tokens whose header names no `kid` with `key`.
    pub fn default_key(self, key: VerifyingKey) -> Self {
        self.with(None, key)
    }

    fn with(mut self, kid: Option<String>, key: VerifyingKey) -> Self {
        let keys = Arc::make_mut(&mut self.keys);
        keys.retain(|(k, _)| *k != kid);
        keys.push((kid, key));
        self
    }

    /// The claims of `token`, if one of the keys signed it and it has not
    /// expired; else a 401 `unauthorized` saying why.
    pub fn verify(&self, token: &str) -> Result<Claims, ProtocolError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ProtocolError::unauthorized(format!("the token is malformed: {e}")))?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .ok_or_else(|| {
                ProtocolError::unauthorized(match &header.kid {
                    Some(kid) => format!("the token's key {kid:?} is not one this server knows"),
                    None => "the token names no key (kid), and this server has no default".into(),
                })
            })?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                ProtocolError::unauthorized(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "the token has expired; get a new one".to_owned()
                    }
                    _ => format!("the token is not valid: {e}"),
                })
            })
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|(kid, _)| kid).collect();
        f.debug_struct("Tokens").field("kids", &kids).finish()
    }
}

/// The token of a request: `Authorization: Bearer`, else `token=`.
fn token_of(request: &Parts, query_too: bool) -> Result<String, ProtocolError> {
    if let Some(value) = request.headers.get(header::AUTHORIZATION) {
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ProtocolError::unauthorized("Authorization is not a Bearer token"))?;
        return Ok(bearer.trim().to_owned());
    }
    if query_too {
        let query = request.uri.query().unwrap_or("");
        let mut tokens = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
        match (tokens.next(), tokens.next()) {
            (Some(token), None) => return Ok(token),
            (Some(_), Some(_)) => {
                return Err(ErrorCode::BadParameter.error("token is given more than once"))
            }
            (None, _) => {}
        }
    }
    Err(ProtocolError::unauthorized(
        "a token is needed (token= or Authorization: Bearer)",
    ))
}

impl Authorize for Tokens {
    fn authorize(&self, request: &Parts, channels: &[ChannelName]) -> Authorization {
        Authorization::ready((|| {
            let claims = self.verify(&token_of(request, true)?)?;
            if let Some(refused) = channels.iter().find(|c| !claims.grants(c.as_str())) {
                return Err(ProtocolError::forbidden(format!(
                    "the token does not grant channel {:?}",
                    refused.as_str()
                )));
            }
            let mut access = Access::granted().expires_at(claims.expiry());
            if let Some(identity) = claims.identity()? {
                access = access.identity(identity);
            }
            Ok(access)
        })())
    }
}

impl AuthorizePublish for Tokens {
    fn authorize(&self, request: &Parts, channel: &ChannelName) -> Authorization<()> {
        Authorization::ready((|| {
            let claims = self.verify(&token_of(request, false)?)?;
            if !claims.publish || !claims.grants(channel.as_str()) {
                return Err(ProtocolError::forbidden(format!(
                    "the token does not grant publishing to {:?}",
                    channel.as_str()
                )));
            }
            Ok(())
        })())
    }
}

/// Signs tokens: for the app, which hands them to its pages and services.
#[derive(Clone)]
pub struct TokenSigner {
    header: Header,
    key: EncodingKey,
}

impl TokenSigner {
    /// HMAC-SHA256 with a shared secret (the [`VerifyingKey::hs256`] one).
    pub fn hs256(secret: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            header: Header::new(Algorithm::HS256),
            key: EncodingKey::from_secret(secret).map_err(TokenError)?,
        })
    }

    /// RSA (PKCS#1 v1.5, SHA-256) with a private key in PEM.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            header: Header::new(Algorithm::RS256),
            key: EncodingKey::from_rsa_pem(pem).map_err(TokenError)?,
        })
    }

    /// ECDSA P-256 with SHA-256, with a private key in PEM (PKCS#8).
    pub fn es256_pem(pem: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            header: Header::new(Algorithm::ES256),
            key: EncodingKey::from_ec_pem(pem).map_err(TokenError)?,
        })
    }

    /// Names the key in each token's header (`kid`), for [`Tokens::key`].
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.header.kid = Some(kid.into());
        self
    }

    /// A token of `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&self.header, claims, &self.key).map_err(TokenError)
    }
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("algorithm", &self.header.alg)
            .field("kid", &self.header.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, bearer: Option<&str>) -> Parts {
        let mut request = http::Request::get(uri);
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(()).unwrap().into_parts().0
    }

    fn names(channels: &[&str]) -> Vec<ChannelName> {
        channels
            .iter()
            .map(|c| ChannelName::new(c).unwrap())
            .collect()
    }

    async fn answer(
        tokens: &Tokens,
        uri: &str,
        channels: &[&str],
    ) -> Result<Access, ProtocolError> {
        Authorize::authorize(tokens, &parts(uri, None), &names(channels)).await
    }

    #[tokio::test]
    async fn an_expiry_past_any_clock_is_granted_not_a_panic() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let tokens = Tokens::new().key("k1", VerifyingKey::hs256(secret).unwrap());
        let mut claims = Claims::new(["lobby"], Duration::from_secs(60));
        claims.exp = u64::MAX;
        let token = TokenSigner::hs256(secret)
            .unwrap()
            .kid("k1")
            .sign(&claims)
            .unwrap();
        let access = answer(&tokens, &format!("/c?token={token}"), &["lobby"])
            .await
            .unwrap();
        assert_eq!(
            access.expiry(),
            Some(UNIX_EPOCH + Duration::from_secs(LAST_EXPIRY))
        );
    }

    #[tokio::test]
    async fn grants_what_the_token_says_and_refuses_the_rest() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let tokens = Tokens::new().key("k1", VerifyingKey::hs256(secret).unwrap());
        let signer = TokenSigner::hs256(secret).unwrap().kid("k1");
        let claims = Claims::new(["room/*", "lobby"], Duration::from_secs(60))
            .subject("ann")
            .info(serde_json::json!({"name": "Ann"}));
        let token = signer.sign(&claims).unwrap();
        let access = answer(&tokens, &format!("/c?token={token}"), &["room/1", "lobby"])
            .await
            .unwrap();
        assert_eq!(access.identity_ref().unwrap().user(), "ann");
        assert_eq!(
            access.identity_ref().unwrap().info(),
            Some(r#"{"name":"Ann"}"#)
        );
        assert_eq!(access.expiry(), Some(claims.expiry()));
        let refused = answer(&tokens, &format!("/c?token={token}"), &["roomy"]).await;
        assert_eq!(refused.unwrap_err().code(), "forbidden");
        // Missing, malformed, unknown key, expired: 401.
        for uri in [
            "/c".to_owned(),
            "/c?token=abc".to_owned(),
            format!(
                "/c?token={}",
                TokenSigner::hs256(secret)
                    .unwrap()
                    .kid("k2")
                    .sign(&claims)
                    .unwrap()
            ),
            format!(
                "/c?token={}",
                signer
                    .sign(&Claims {
                        exp: 1,
                        ..claims.clone()
                    })
                    .unwrap()
            ),
            format!(
                "/c?token={}",
                TokenSigner::hs256(b"another secret, 32 bytes long!!!")
                    .unwrap()
                    .kid("k1")
                    .sign(&claims)
                    .unwrap()
            ),
        ] {
            let error = answer(&tokens, &uri, &["lobby"]).await.unwrap_err();
            assert_eq!(error.code(), "unauthorized", "{uri}: {error}");
        }
        // A subscribe token does not publish.
        let publish = AuthorizePublish::authorize(
            &tokens,
            &parts("/p/lobby", Some(&token)),
            &ChannelName::new("lobby").unwrap(),
        )
        .await;
        assert_eq!(publish.unwrap_err().code(), "forbidden");
        let service = signer.sign(&claims.clone().publisher()).unwrap();
        let publish = AuthorizePublish::authorize(
            &tokens,
            &parts("/p/lobby", Some(&service)),
            &ChannelName::new("lobby").unwrap(),
        )
        .await;
        assert!(publish.is_ok());
    }
}
