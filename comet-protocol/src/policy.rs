//! The application's say in a subscription: which channels, and whether it may.
//!
//! Both run on every request (long polls included) with the request's parts,
//! so they can read the path, cookies, or whatever an earlier middleware put
//! in the request's extensions (a session, an authenticated user).
//! Closures implement both traits, as in tower-http.

use super::ProtocolError;
use crate::ChannelName;
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
