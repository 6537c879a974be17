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
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::SystemTime,
};

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

/// What an authorizer grants a subscribe request: access, and optionally
/// who it is (for presence and revocation) and until when (a token's
/// `exp`: the subscription ends then, with an end item saying so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub(crate) identity: Option<Identity>,
    pub(crate) expires: Option<SystemTime>,
}

impl Access {
    /// Access, to nobody in particular, without end.
    pub fn granted() -> Self {
        Self::default()
    }

    /// The subscription belongs to `identity` (overriding the route's
    /// [`Identify`]).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The subscription ends at `at`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// Who it is, if the authorizer said.
    pub fn identity_ref(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// When it ends, if ever.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires
    }
}

/// An authorizer's answer: at once (synchronous authorizers, no
/// allocation), or a future (an authorizer that looks a session up).
#[must_use = "an authorization does nothing until awaited"]
pub struct Authorization<T = Access>(Answer<T>);

enum Answer<T> {
    Ready(Option<Result<T, ProtocolError>>),
    Later(Pin<Box<dyn Future<Output = Result<T, ProtocolError>> + Send>>),
}

impl<T> Authorization<T> {
    /// An answer known now.
    pub fn ready(answer: Result<T, ProtocolError>) -> Self {
        Self(Answer::Ready(Some(answer)))
    }

    /// An answer a future gives.
    pub fn later(answer: impl Future<Output = Result<T, ProtocolError>> + Send + 'static) -> Self {
        Self(Answer::Later(Box::pin(answer)))
    }
}

impl<T> From<Result<T, ProtocolError>> for Authorization<T> {
    fn from(answer: Result<T, ProtocolError>) -> Self {
        Self::ready(answer)
    }
}

impl<T: Unpin> Future for Authorization<T> {
    type Output = Result<T, ProtocolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Answer::Ready(answer) => Poll::Ready(
                answer
                    .take()
                    .expect("an authorization is not polled after it answered"),
            ),
            Answer::Later(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for Authorization<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Answer::Ready(_) => "Authorization::Ready",
            Answer::Later(_) => "Authorization::Later",
        })
    }
}

/// Decides whether a request may subscribe to its channels, and what it
/// gets: at once, or after awaiting (a session store, an auth service),
/// as tower-http's `AsyncAuthorizeRequest` does.
///
/// Closures `Fn(&Parts, &[ChannelName]) -> bool` implement it (a refusal
/// is a 403); an async one goes through
/// [`SubscribeRoute::authorize_async`](crate::SubscribeRoute::authorize_async).
pub trait Authorize: Send + Sync + 'static {
    /// `Ok` with what it grants; an error (usually [`ProtocolError::forbidden`]
    /// or [`ProtocolError::unauthorized`]) to refuse. The future cannot
    /// borrow `request`: take what it needs first.
    fn authorize(&self, request: &Parts, channels: &[ChannelName]) -> Authorization;
}

impl<F> Authorize for F
where
    F: Fn(&Parts, &[ChannelName]) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts, channels: &[ChannelName]) -> Authorization {
        Authorization::ready(if self(request, channels) {
            Ok(Access::granted())
        } else {
            Err(ProtocolError::forbidden(
                "not authorized to subscribe to these channels",
            ))
        })
    }
}

/// An async closure as an [`Authorize`]; see
/// [`SubscribeRoute::authorize_async`](crate::SubscribeRoute::authorize_async).
#[derive(Clone)]
pub struct AuthorizeAsync<F>(pub(crate) F);

impl<F, Fut> Authorize for AuthorizeAsync<F>
where
    F: Fn(&Parts, &[ChannelName]) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Access, ProtocolError>> + Send + 'static,
{
    fn authorize(&self, request: &Parts, channels: &[ChannelName]) -> Authorization {
        Authorization::later((self.0)(request, channels))
    }
}

/// The default: anyone may subscribe to any channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorize for AllowAll {
    fn authorize(&self, _: &Parts, _: &[ChannelName]) -> Authorization {
        Authorization::ready(Ok(Access::granted()))
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
