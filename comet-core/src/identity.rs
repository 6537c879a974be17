//! Who a subscription belongs to: a user id and, optionally, a little
//! JSON about them, which presence lists and join events carry.

use std::{fmt, sync::Arc};

/// The longest user id, in bytes.
pub const MAX_USER_LEN: usize = 256;
/// The largest info object, in bytes of JSON: presence lists carry it for
/// every user, and join events to every subscriber that asks for them.
pub const MAX_INFO_BYTES: usize = 1024;

/// The user a subscription belongs to, and what others may see of them.
///
/// An app makes one from whatever its request carries (a session, a token)
/// and subscribes with it ([`Subscriber::identity`](crate::Subscriber::identity);
/// on a route, `SubscribeRoute::identify`). Subscriptions without one are
/// anonymous: they count as subscribers, never as users.
///
/// ```
/// use comet_push::Identity;
/// let alice = Identity::new("u-42")
///     .unwrap()
///     .with_info(serde_json::json!({"name": "Alice"}))
///     .unwrap();
/// assert_eq!(alice.user(), "u-42");
/// assert_eq!(alice.info(), Some(r#"{"name":"Alice"}"#));
/// assert!(Identity::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    user: Arc<str>,
    /// A JSON object's text, compact.
    info: Option<Arc<str>>,
}

/// Why an [`Identity`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidIdentity {
    /// The user id is empty.
    EmptyUser,
    /// The user id is longer than [`MAX_USER_LEN`] bytes.
    UserTooLong(usize),
    /// The user id has a control character.
    ControlCharacter,
    /// The info is not a JSON object.
    InfoNotAnObject,
    /// The info's JSON is larger than [`MAX_INFO_BYTES`].
    InfoTooLarge(usize),
}

impl fmt::Display for InvalidIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyUser => f.write_str("a user id is not empty"),
            Self::UserTooLong(len) => write!(
                f,
                "a user id is at most {MAX_USER_LEN} bytes, this one is {len}"
            ),
            Self::ControlCharacter => f.write_str("a user id has no control characters"),
            Self::InfoNotAnObject => f.write_str("a user's info is a JSON object"),
            Self::InfoTooLarge(len) => write!(
                f,
                "a user's info is at most {MAX_INFO_BYTES} bytes of JSON, this one is {len}"
            ),
        }
    }
}

impl std::error::Error for InvalidIdentity {}

impl Identity {
    /// The user `user`, with no info.
    pub fn new(user: impl Into<Arc<str>>) -> Result<Self, InvalidIdentity> {
        let user = user.into();
        if user.is_empty() {
            return Err(InvalidIdentity::EmptyUser);
        }
        if user.len() > MAX_USER_LEN {
            return Err(InvalidIdentity::UserTooLong(user.len()));
        }
        if user.chars().any(char::is_control) {
            return Err(InvalidIdentity::ControlCharacter);
        }
        Ok(Self { user, info: None })
    }

    /// Adds what others may see of the user: a JSON object of at most
    /// [`MAX_INFO_BYTES`], such as a display name.
    pub fn with_info(self, info: serde_json::Value) -> Result<Self, InvalidIdentity> {
        if !info.is_object() {
            return Err(InvalidIdentity::InfoNotAnObject);
        }
        let text = info.to_string();
        if text.len() > MAX_INFO_BYTES {
            return Err(InvalidIdentity::InfoTooLarge(text.len()));
        }
        Ok(Self {
            info: Some(text.into()),
            ..self
        })
    }

    /// Adds info given as JSON text (an engine reading it back); checked as
    /// [`with_info`](Self::with_info) checks a value.
    pub fn with_info_json(self, info: &str) -> Result<Self, InvalidIdentity> {
        let value: serde_json::Value =
            serde_json::from_str(info).map_err(|_| InvalidIdentity::InfoNotAnObject)?;
        self.with_info(value)
    }

    /// The user id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user id, shared.
    pub fn user_arc(&self) -> &Arc<str> {
        &self.user
    }

    /// The info, as compact JSON text (an object), if any.
    pub fn info(&self) -> Option<&str> {
        self.info.as_deref()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("info", &self.info)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_and_infos_are_checked() {
        assert_eq!(Identity::new(""), Err(InvalidIdentity::EmptyUser));
        assert_eq!(
            Identity::new("a\nb"),
            Err(InvalidIdentity::ControlCharacter)
        );
        assert_eq!(
            Identity::new("x".repeat(MAX_USER_LEN + 1)),
            Err(InvalidIdentity::UserTooLong(MAX_USER_LEN + 1))
        );
        assert!(Identity::new("x".repeat(MAX_USER_LEN)).is_ok());
        let user = Identity::new("ü").unwrap();
        assert_eq!(
            user.clone().with_info(json!([1])),
            Err(InvalidIdentity::InfoNotAnObject)
        );
        let big = json!({ "n": "x".repeat(MAX_INFO_BYTES) });
        assert!(matches!(
            user.clone().with_info(big),
            Err(InvalidIdentity::InfoTooLarge(_))
        ));
        let with = user.with_info_json(r#"{ "a" : 1 }"#).unwrap();
        assert_eq!(with.info(), Some(r#"{"a":1}"#));
    }
}
