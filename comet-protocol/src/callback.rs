//! Callback names, for the transports that call a page's function: the
//! forever frame (`parent.<callback>(...)`) and JSONP (`<callback>(...)`).
//! A name is where a request chooses code to run in a page, so it may only
//! name a function registered for comet.

use super::{ErrorCode, ProtocolError};

/// The longest callback name accepted.
pub const MAX_CALLBACK_LEN: usize = 64;

/// The registry object `comet.js` keeps its callbacks in, and the default of
/// [`SubscribeRoute::callback_registry`](super::SubscribeRoute::callback_registry).
pub const DEFAULT_CALLBACK_REGISTRY: &str = "__comet_cb";

/// Names that reach an object's prototype chain or its constructor (and so
/// `Function`) rather than a function registered for comet.
const PROTOTYPE_NAMES: [&str; 12] = [
    "__proto__",
    "constructor",
    "prototype",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toString",
    "valueOf",
];

/// An ASCII JavaScript identifier (`[A-Za-z_$][A-Za-z0-9_$]*`).
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// An identifier that names no prototype machinery.
pub(crate) fn is_function_name(name: &str) -> bool {
    is_identifier(name) && !PROTOTYPE_NAMES.contains(&name)
}

/// PROTOCOL.md: a callback names a function registered for comet: one
/// identifier (`cb`), or one identifier inside the route's registry object
/// (`__comet_cb.p1`), at most 64 characters. Any other path (`document.write`,
/// `victim.document.body.remove`) could call a method of the page.
pub(crate) fn validate(callback: &str, registry: &str) -> Result<(), ProtocolError> {
    let valid = callback.len() <= MAX_CALLBACK_LEN
        && match callback.split_once('.') {
            None => is_function_name(callback),
            Some((object, name)) => object == registry && is_function_name(name),
        };
    if valid {
        Ok(())
    } else {
        Err(ErrorCode::BadCallback.error(format!(
            "callback must be one identifier or {registry}.<identifier>, at most {MAX_CALLBACK_LEN} characters, naming no prototype property"
        )))
    }
}

/// A request's `callback` (none is an empty name, refused), checked against
/// the route's registry.
pub(crate) fn checked(callback: Option<&str>, registry: &str) -> Result<String, ProtocolError> {
    let callback = callback.unwrap_or("");
    validate(callback, registry)?;
    Ok(callback.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_name_only_registered_functions() {
        let registry = DEFAULT_CALLBACK_REGISTRY;
        for ok in [
            "cb",
            "$",
            "_x1",
            "jQuery123_456",
            "__comet_cb.p1",
            "__comet_cb.f12",
            &"a".repeat(64),
        ] {
            assert!(validate(ok, registry).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a-b",
            "alert(1)",
            "a;b",
            "a b",
            "<x>",
            "é",
            "a.b.c",
            "document.write",
            "location.reload",
            "victim.document.body.remove",
            "constructor.constructor",
            "__proto__",
            "constructor",
            "prototype",
            "__comet_cb.__proto__",
            "__comet_cb.constructor",
            "__comet_cb.p1.x",
            "other_cb.p1",
            &"a".repeat(65),
        ] {
            assert_eq!(
                validate(bad, registry).unwrap_err().code(),
                "bad_callback",
                "{bad}"
            );
        }
        assert!(validate("app_cb.x", "app_cb").is_ok());
        assert!(validate("__comet_cb.x", "app_cb").is_err());
    }
}
