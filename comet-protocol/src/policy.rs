//! The application's say in a subscription: which channels, whether it
//! may, and who it is.
//!
//! Both run on every request (long polls included) with the request's parts,
//! so they can read the path, cookies, or whatever an earlier middleware put
//! in the request's extensions (a session, an authenticated user).
//! Closures implement both traits, as in tower-http.

use super::ProtocolError;
use crate::{ChannelName, Identity};
use http::request::Parts;

/// Decides the channels of a subscribe request.
pub trait ResolveChannels: Send + Sync + 'static {
    /// The channels for `request`, given those its query asked for
    /// (`channel=` parameters, in order).
    fn resolve(
        &self,
        request: &Parts,
        requested: Vec<String>,
    ) -> Result<Vec<String>, ProtocolError>;
}

impl<F> ResolveChannels for F
where
    F: Fn(&Parts, Vec<String>) -> Result<Vec<String>, ProtocolError> + Send + Sync + 'static,
{
    fn resolve(
        &self,
        request: &Parts,
        requested: Vec<String>,
    ) -> Result<Vec<String>, ProtocolError> {
        self(request, requested)
    }
}

/// The default: the channels the query names.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryChannels;

impl ResolveChannels for QueryChannels {
    fn resolve(&self, _: &Parts, requested: Vec<String>) -> Result<Vec<String>, ProtocolError> {
        Ok(requested)
    }
}

/// Decides whether a request may subscribe to its channels.
pub trait Authorize: Send + Sync + 'static {
    /// `Ok` to allow; an error (usually [`ProtocolError::forbidden`]) to refuse.
    fn authorize(&self, request: &Parts, channels: &[ChannelName]) -> Result<(), ProtocolError>;
}

impl<F> Authorize for F
where
    F: Fn(&Parts, &[ChannelName]) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts, channels: &[ChannelName]) -> Result<(), ProtocolError> {
        if self(request, channels) {
            Ok(())
        } else {
            Err(ProtocolError::forbidden(
                "not authorized to subscribe to these channels",
            ))
        }
    }
}

/// The default: anyone may subscribe to any channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorize for AllowAll {
    fn authorize(&self, _: &Parts, _: &[ChannelName]) -> Result<(), ProtocolError> {
        Ok(())
    }
}

/// Tells who a subscribe request comes from, for presence.
pub trait Identify: Send + Sync + 'static {
    /// The request's identity; `Ok(None)` subscribes anonymously, an error
    /// refuses the request.
    fn identify(&self, request: &Parts) -> Result<Option<Identity>, ProtocolError>;
}

impl<F> Identify for F
where
    F: Fn(&Parts) -> Result<Option<Identity>, ProtocolError> + Send + Sync + 'static,
{
    fn identify(&self, request: &Parts) -> Result<Option<Identity>, ProtocolError> {
        self(request)
    }
}

/// The default: every subscription is anonymous.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl Identify for Anonymous {
    fn identify(&self, _: &Parts) -> Result<Option<Identity>, ProtocolError> {
        Ok(None)
    }
}
