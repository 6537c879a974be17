//! Turning what Redis sends back into messages: pub/sub announcements,
//! stream entries, and the read script's reply (a channel's [`State`]).
//! Anything else on comet's channels is refused with a reason, never a
//! panic: other clients of the same Redis can publish there.
//!
//! An announcement is a message,
//! `c2\n<epoch>\n<offset>\n<time ms>\n<identity>\n<kind>\n<event>\n<data>`
//! (the publish script writes it; the data, last, may hold any byte), or a
//! new epoch, `n1\n<epoch>` (the new-epoch script writes it), or users who
//! joined or left, `p1` then `\n<join|leave>\n<user>\n<info JSON or empty>`
//! per event (the presence script writes it; user ids have no control
//! characters, and compact JSON no raw line break). Messages of `c1`, the
//! same without the identity, from nodes of an earlier version, are read
//! too. A node of a version before `p1` counts a `p1` as malformed, warns
//! and ignores it: it touches no mirror.
//!
//! On the node-wide control channel (`<prefix>:control`), orders to live
//! subscriptions ([`Control`]), `o1\n<op>` then its fields, one a line:
//! `o1\nd\n<user>` (disconnect), `o1\nu\n<user>\n<channel>` (unsubscribe),
//! `o1\ns\n<user>\n<channel>` (subscribe) and `o1\nc\n<channel>` (close).
//! Neither a user id nor a channel name holds a line break (user ids have
//! no control characters), so every field is one line, and an order is
//! checked as the hub checks what it sends: anything else is refused whole.
//! A node of a version before `o1` does not listen there.
//!
//! Beside them, the presence scripts' replies: transitions ([`Found`]) and
//! a channel's presence ([`Shares`]).

use bytes::Bytes;
use comet_core::engine::{Control, Transition};
use comet_core::{
    ChannelName, Identity, Member, Message, Payload, PayloadKind, Presence, PresenceKind,
};
use redis::Value;
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::time::Instant;

/// What a message needs besides its channel, before it is shared.
pub(crate) struct Numbered {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    pub(crate) time_ms: u64,
    /// The publish's random identity (0 for entries written before there
    /// was one).
    pub(crate) identity: u64,
    pub(crate) kind: PayloadKind,
    pub(crate) event: Option<Box<str>>,
    pub(crate) data: Bytes,
}

impl Numbered {
    pub(crate) fn into_message(self, channel: ChannelName) -> Arc<Message> {
        Arc::new(
            Message::new(
                channel,
                self.epoch,
                self.offset,
                self.kind,
                self.event,
                self.data,
            )
            .published_at_instant(instant_of(self.time_ms))
            .with_identity(self.identity),
        )
    }
}

/// The local instant of a Unix time in milliseconds (Redis's clock), so that
/// history ages count from the publish.
fn instant_of(time_ms: u64) -> Instant {
    let now = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let age = wall.saturating_sub(Duration::from_millis(time_ms));
    now.checked_sub(age).unwrap_or(now)
}

/// The kind field as the scripts store it.
pub(crate) fn kind_code(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::Json => "j",
        PayloadKind::Text => "t",
    }
}

fn kind_of(code: &[u8]) -> Result<PayloadKind, &'static str> {
    match code {
        b"j" => Ok(PayloadKind::Json),
        b"t" => Ok(PayloadKind::Text),
        _ => Err("unknown kind"),
    }
}

fn number(bytes: &[u8], what: &'static str) -> Result<u64, &'static str> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(what)
}

fn event_of(bytes: &[u8]) -> Result<Option<Box<str>>, &'static str> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let event = std::str::from_utf8(bytes).map_err(|_| "event is not UTF-8")?;
    // As the hub checks it: no line break to break SSE framing, no
    // `comet-gap` to forge, no `error` or `open` for EventSource.
    comet_core::validate_event(event).map_err(|_| "event name the hub refuses")?;
    Ok(Some(event.into()))
}

/// The payload, checked as the hub checks what it accepts (UTF-8 text, or
/// RFC 8259 JSON kept as published): a foreign writer might not have.
fn data_of(kind: PayloadKind, bytes: &[u8]) -> Result<Bytes, &'static str> {
    let bytes = Bytes::copy_from_slice(bytes);
    let payload = match kind {
        PayloadKind::Json => Payload::json_bytes(bytes).map_err(|_| "data is not JSON")?,
        PayloadKind::Text => Payload::text_bytes(bytes).map_err(|_| "data is not UTF-8")?,
    };
    Ok(payload.data().clone())
}

/// What a node hears on a channel's pub/sub channel.
pub(crate) enum Announcement {
    /// A message was published.
    Message(Numbered),
    /// The channel moved to this epoch.
    NewEpoch(u64),
    /// Users joined or left (at least one event).
    Presence(Vec<(PresenceKind, Identity)>),
}

/// Parses a pub/sub announcement.
pub(crate) fn announcement(payload: &[u8]) -> Result<Announcement, &'static str> {
    if let Some(events) = payload.strip_prefix(b"p1\n") {
        return presence_events(events).map(Announcement::Presence);
    }
    let mut parts = payload.splitn(8, |b| *b == b'\n');
    let mut next = |what| parts.next().ok_or(what);
    let identified = match next("empty")? {
        b"c2" => true,
        b"c1" => false,
        b"n1" => {
            let epoch = number(next("no epoch")?, "bad epoch")?;
            return Ok(Announcement::NewEpoch(epoch));
        }
        _ => return Err("not a comet announcement"),
    };
    let epoch = number(next("no epoch")?, "bad epoch")?;
    let offset = number(next("no offset")?, "bad offset")?;
    let time_ms = number(next("no time")?, "bad time")?;
    let identity = if identified {
        number(next("no identity")?, "bad identity")?
    } else {
        0
    };
    let kind = kind_of(next("no kind")?)?;
    let event = event_of(next("no event")?)?;
    let mut data = next("no data")?.to_vec();
    if !identified {
        // c1 has one field less: what splitting by eight cut off is data.
        for rest in parts {
            data.push(b'\n');
            data.extend_from_slice(rest);
        }
    }
    let data = data_of(kind, &data)?;
    if offset == 0 {
        return Err("offset 0");
    }
    Ok(Announcement::Message(Numbered {
        epoch,
        offset,
        time_ms,
        identity,
        kind,
        event,
        data,
    }))
}

/// The events of a `p1` announcement, after its first line.
fn presence_events(payload: &[u8]) -> Result<Vec<(PresenceKind, Identity)>, &'static str> {
    let mut fields = payload.split(|b| *b == b'\n');
    let mut events = Vec::new();
    while let Some(kind) = fields.next() {
        let kind = match kind {
            b"join" => PresenceKind::Join,
            b"leave" => PresenceKind::Leave,
            _ => return Err("unknown presence event"),
        };
        let user = fields.next().ok_or("no user")?;
        let info = fields.next().ok_or("no info")?;
        events.push((kind, identity_of(user, info)?));
    }
    Ok(events)
}

/// A user and their info (empty for none), checked as the hub checks an
/// identity.
fn identity_of(user: &[u8], info: &[u8]) -> Result<Identity, &'static str> {
    let user = std::str::from_utf8(user).map_err(|_| "user is not UTF-8")?;
    let identity = Identity::new(user).map_err(|_| "user id the hub refuses")?;
    if info.is_empty() {
        return Ok(identity);
    }
    let info = std::str::from_utf8(info).map_err(|_| "info is not UTF-8")?;
    identity
        .with_info_json(info)
        .map_err(|_| "info the hub refuses")
}

/// An order as the control channel carries it; `None` for an order this
/// version cannot carry (`Control` may grow).
pub(crate) fn control_message(control: &Control) -> Option<String> {
    Some(match control {
        Control::Disconnect { user } => format!("o1\nd\n{user}"),
        Control::Unsubscribe { user, channel } => format!("o1\nu\n{user}\n{channel}"),
        Control::Subscribe { user, channel } => format!("o1\ns\n{user}\n{channel}"),
        Control::Close { channel } => format!("o1\nc\n{channel}"),
        _ => return None,
    })
}

/// Parses an order heard on the control channel.
pub(crate) fn control(payload: &[u8]) -> Result<Control, &'static str> {
    let fields = payload
        .strip_prefix(b"o1\n")
        .ok_or("not a comet order")?
        .split(|b| *b == b'\n')
        .map(|field| std::str::from_utf8(field).map_err(|_| "a field is not UTF-8"))
        .collect::<Result<Vec<&str>, _>>()?;
    let user = |user: &str| {
        Identity::new(user)
            .map(|identity| identity.user_arc().clone())
            .map_err(|_| "user id the hub refuses")
    };
    let channel = |name: &str| ChannelName::new(name).map_err(|_| "channel name the hub refuses");
    match fields.as_slice() {
        ["d", who] => Ok(Control::Disconnect { user: user(who)? }),
        ["u", who, name] => Ok(Control::Unsubscribe {
            user: user(who)?,
            channel: channel(name)?,
        }),
        ["s", who, name] => Ok(Control::Subscribe {
            user: user(who)?,
            channel: channel(name)?,
        }),
        ["c", name] => Ok(Control::Close {
            channel: channel(name)?,
        }),
        _ => Err("unknown order, or the wrong number of fields"),
    }
}

/// A transition the presence script reported.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) transition: Transition,
    /// Found by expiry (another node's shares, or this node's own after it
    /// could not refresh them), not caused by the call.
    pub(crate) expired: bool,
}

/// Parses the presence script's reply: code, user, info per transition.
pub(crate) fn transitions(value: &Value) -> Result<Vec<Found>, &'static str> {
    let Value::Array(parts) = value else {
        return Err("unexpected reply to the presence script");
    };
    if parts.len() % 3 != 0 {
        return Err("unexpected reply to the presence script");
    }
    parts
        .chunks(3)
        .map(|part| {
            let field = |value| bulk(value).ok_or("a transition's field is not a string");
            let (code, user, info) = (field(&part[0])?, field(&part[1])?, field(&part[2])?);
            let (transition, expired) = match code {
                b"O" => (Transition::Occupied, false),
                b"V" => (Transition::Vacated, false),
                b"v" => (Transition::Vacated, true),
                b"J" => (Transition::Joined(identity_of(user, info)?), false),
                b"L" => (Transition::Left(identity_of(user, info)?), false),
                b"l" => (Transition::Left(identity_of(user, info)?), true),
                _ => return Err("unknown transition"),
            };
            Ok(Found {
                transition,
                expired,
            })
        })
        .collect()
}

/// A channel's subscribers and presence across nodes, as the presence read
/// script found them.
#[derive(Debug)]
pub(crate) struct Shares {
    pub(crate) subscribers: usize,
    /// When asked for.
    pub(crate) presence: Option<Presence>,
}

impl Shares {
    /// Parses the presence read script's reply. A member whose user or info
    /// is not comet's (written by something else) is left out of the list,
    /// and counted in `unreadable`.
    pub(crate) fn parse(value: &Value, unreadable: &AtomicU64) -> Result<Self, &'static str> {
        let Value::Array(parts) = value else {
            return Err("unexpected reply to the presence read script");
        };
        let count = |value| {
            integer(value)
                .map(|n| n as usize)
                .ok_or("a count is not a number")
        };
        let subscribers = count(parts.first().ok_or("no subscriber count")?)?;
        let presence = match parts.as_slice() {
            [_] => None,
            [_, users, connections, Value::Array(members)] => {
                let mut presence = Presence::default();
                presence.users = count(users)?;
                presence.connections = count(connections)?;
                for member in members.chunks(3) {
                    let [user, connections, info] = member else {
                        return Err("odd member list");
                    };
                    let identity = bulk(user)
                        .zip(bulk(info))
                        .ok_or("a member's field is not a string")
                        .and_then(|(user, info)| identity_of(user, info));
                    match identity {
                        Ok(identity) => presence.members.push(Member {
                            identity,
                            connections: count(connections)?,
                        }),
                        Err(_) => {
                            unreadable.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(presence)
            }
            _ => return Err("unexpected reply to the presence read script"),
        };
        Ok(Self {
            subscribers,
            presence,
        })
    }
}

/// Parses one stream entry (`[id, [field, value, ...]]`) of epoch `epoch`.
pub(crate) fn entry(epoch: u64, value: &Value) -> Result<Numbered, &'static str> {
    let Value::Array(parts) = value else {
        return Err("entry is not an array");
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return Err("entry is not [id, fields]");
    };
    let id = bulk(id).ok_or("entry ID is not a string")?;
    let offset = id.strip_prefix(b"0-").ok_or("entry ID is not 0-<offset>")?;
    let offset = number(offset, "entry ID is not 0-<offset>")?;
    let (mut header, mut data) = (None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err("odd field list");
        };
        let value = bulk(value).ok_or("field is not a string")?;
        match bulk(name).ok_or("field name is not a string")? {
            b"h" => header = Some(value),
            b"d" => data = Some(value),
            _ => {}
        }
    }
    let mut lines = header.ok_or("no header")?.splitn(4, |b| *b == b'\n');
    let mut next = |what| lines.next().ok_or(what);
    let time_ms = number(next("no time")?, "bad time")?;
    let identity = number(next("no identity")?, "bad identity")?;
    let kind = kind_of(next("no kind")?)?;
    let event = event_of(next("no event")?)?;
    Ok(Numbered {
        epoch,
        offset,
        time_ms,
        identity,
        kind,
        event,
        data: data_of(kind, data.ok_or("no data")?)?,
    })
}

/// A message's header, as its stream entry (field `h`) and announcement
/// hold it: `<time ms>\n<identity>\n<kind>\n<event>` (an event name holds
/// no line break).
pub(crate) fn header(
    time_ms: u64,
    identity: &str,
    kind: PayloadKind,
    event: Option<&str>,
) -> String {
    format!(
        "{time_ms}\n{identity}\n{}\n{}",
        kind_code(kind),
        event.unwrap_or("")
    )
}

/// The bytes of a string reply.
pub(crate) fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// An integer reply (Redis answers some integers as strings).
pub(crate) fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => bulk(other).and_then(|b| number(b, "").ok()),
    }
}

/// A channel's state as Redis has it.
pub(crate) struct State {
    /// [`VOID_EPOCH`](comet_core::engine::VOID_EPOCH) when Redis has nothing
    /// of the channel.
    pub(crate) epoch: u64,
    pub(crate) last: u64,
    pub(crate) entries: Vec<Numbered>,
    /// The entry at the reader's own offset, when asked for and still held.
    pub(crate) at: Option<Numbered>,
    /// When the epoch began, if it is the channel's first since the void
    /// (Redis's clock, ms; 0 otherwise).
    pub(crate) born: u64,
    /// Redis's clock when it answered (ms).
    pub(crate) now: u64,
    /// The identity of the newest entry, when the read asked for no
    /// history (0 otherwise, or unknown).
    pub(crate) newest: u64,
}

impl State {
    /// Reads the read script's answer. An entry that is not comet's
    /// (written by something else) is left out and counted in `unreadable`:
    /// readers get an exact gap where it was.
    pub(crate) fn parse(value: Value, unreadable: &AtomicU64) -> Result<Self, &'static str> {
        let Value::Array(parts) = value else {
            return Err("unexpected reply to the read script");
        };
        let [epoch, last, Value::Array(entries), Value::Array(at), born, now, newest] =
            parts.as_slice()
        else {
            return Err("unexpected reply to the read script");
        };
        let newest = integer(newest).unwrap_or(0);
        let born = integer(born).ok_or("the epoch's start is not a number")?;
        let now = integer(now).ok_or("the time is not a number")?;
        let epoch = integer(epoch).ok_or("the epoch is not a number")?;
        let last = integer(last).ok_or("the offset is not a number")?;
        let entries = entries
            .iter()
            .filter_map(|value| match entry(epoch, value) {
                Ok(entry) if entry.offset <= last => Some(entry),
                Ok(_) | Err(_) => {
                    unreadable.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
            .collect();
        let at = at.first().and_then(|value| entry(epoch, value).ok());
        Ok(Self {
            epoch,
            last,
            entries,
            at,
            born,
            now,
            newest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_and_anything_else_is_refused() {
        let message = |bytes: &[u8]| match announcement(bytes) {
            Ok(Announcement::Message(numbered)) => numbered,
            Ok(_) => panic!("not a message"),
            Err(reason) => panic!("{reason}"),
        };
        let ok = message(b"c1\n42\n7\n1700000000000\nt\njoined\nhello\nworld");
        assert_eq!((ok.epoch, ok.offset, ok.kind), (42, 7, PayloadKind::Text));
        assert_eq!(ok.event.as_deref(), Some("joined"));
        assert_eq!(&ok.data[..], b"hello\nworld");
        let none = message(b"c1\n42\n7\n1\nj\n\n{\"a\":\n1}");
        assert_eq!(none.event, None);
        assert_eq!(&none.data[..], b"{\"a\":\n1}", "JSON as published");
        let identified = message(b"c2\n42\n7\n1\n99\nt\n\nline\nbreaks\n");
        assert_eq!((identified.identity, identified.offset), (99, 7));
        assert_eq!(&identified.data[..], b"line\nbreaks\n");
        assert!(matches!(
            announcement(b"n1\n77"),
            Ok(Announcement::NewEpoch(77))
        ));
        for bad in [
            &b""[..],
            b"hello",
            b"c1\nx\n7\n1\nt\n\nd",
            b"c1\n1\n-7\n1\nt\n\nd",
            b"c1\n1\n0\n1\nt\n\nd",
            b"c1\n1\n7\n1\nq\n\nd",
            b"c1\n1\n7\n1\nt\n\n\xff",
            b"c1\n1\n7\n1\nt\n\xff\nd",
            b"c1\n1\n7\n1\nt\n",
            b"c1\n1\n7\n1\nj\n\n{nope",
            b"c1\n1\n7\n1\nt\ncomet-gap\nx",
            b"c2\n1\n7\n1\nx\nt\n\nd",
            b"c2\n1\n7\n1\n5\nt\n",
            b"n1\nx",
            b"n1",
            b"c1\n1\n7\n1\nt\nerror\nx",
            b"c1\n1\n7\n1\nt\na\rb\nx",
        ] {
            assert!(announcement(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn presence_announcements_parse_and_anything_else_is_refused() {
        let Ok(Announcement::Presence(events)) =
            announcement(b"p1\njoin\nann\n{\"name\":\"Ann\"}\nleave\nbob\n")
        else {
            panic!("not presence");
        };
        let ann = Identity::new("ann")
            .unwrap()
            .with_info(serde_json::json!({"name": "Ann"}))
            .unwrap();
        assert_eq!(
            events,
            vec![
                (PresenceKind::Join, ann),
                (PresenceKind::Leave, Identity::new("bob").unwrap())
            ]
        );
        for bad in [
            &b"p1"[..],
            b"p1\n",
            b"p1\nwave\nann\n",
            b"p1\njoin\nann",
            b"p1\njoin\n\n",
            b"p1\njoin\nann\n[1]",
            b"p1\njoin\nann\n{nope",
            b"p1\njoin\n\xff\n",
        ] {
            assert!(announcement(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn orders_round_trip_and_anything_else_is_refused() {
        let user: Arc<str> = Arc::from("ann é:/{x} 😀");
        let channel = ChannelName::new("room/a:b").unwrap();
        for order in [
            Control::Disconnect { user: user.clone() },
            Control::Unsubscribe {
                user: user.clone(),
                channel: channel.clone(),
            },
            Control::Subscribe {
                user: user.clone(),
                channel: channel.clone(),
            },
            Control::Close {
                channel: channel.clone(),
            },
        ] {
            let wire = control_message(&order).unwrap();
            assert_eq!(control(wire.as_bytes()), Ok(order), "{wire:?}");
        }
        assert_eq!(
            control(b"o1\nd\nann"),
            Ok(Control::Disconnect { user: "ann".into() })
        );
        for bad in [
            &b""[..],
            b"o1",
            b"o1\n",
            b"o2\nd\nann",
            b"c2\n1\n2",
            b"o1\nx\nann",
            b"o1\nd\n",
            b"o1\nd\nann\n",
            b"o1\nd\nann\nroom",
            b"o1\nd\na\tb",
            b"o1\nd\n\xff",
            b"o1\nu\nann",
            b"o1\nu\nann\nbad name",
            b"o1\ns\nann\n",
            b"o1\nc\n",
            b"o1\nc\nroom\nmore",
            b"o1\nc\nbad{name}",
        ] {
            assert!(control(bad).is_err(), "{bad:?}");
        }
        let long = format!("o1\nd\n{}", "x".repeat(comet_core::MAX_USER_LEN + 1));
        assert!(control(long.as_bytes()).is_err());
    }

    #[test]
    fn presence_replies_parse() {
        let s = |v: &str| Value::BulkString(v.as_bytes().to_vec());
        let reply = Value::Array(vec![
            s("v"),
            s(""),
            s(""),
            s("J"),
            s("ann"),
            s(""),
            s("l"),
            s("bob"),
            s("{}"),
        ]);
        let found = transitions(&reply).unwrap();
        let bob = Identity::new("bob")
            .unwrap()
            .with_info(serde_json::json!({}))
            .unwrap();
        assert_eq!(
            found,
            vec![
                Found {
                    transition: Transition::Vacated,
                    expired: true
                },
                Found {
                    transition: Transition::Joined(Identity::new("ann").unwrap()),
                    expired: false
                },
                Found {
                    transition: Transition::Left(bob),
                    expired: true
                },
            ]
        );
        assert!(transitions(&Value::Array(vec![s("J"), s("ann")])).is_err());
        assert!(transitions(&Value::Array(vec![s("X"), s(""), s("")])).is_err());
        let unreadable = AtomicU64::new(0);
        let shares = Shares::parse(
            &Value::Array(vec![
                Value::Int(5),
                Value::Int(2),
                Value::Int(3),
                Value::Array(vec![
                    s("ann"),
                    Value::Int(2),
                    s(""),
                    s("bad\nuser"),
                    Value::Int(1),
                    s(""),
                ]),
            ]),
            &unreadable,
        )
        .unwrap();
        let presence = shares.presence.unwrap();
        assert_eq!(
            (shares.subscribers, presence.users, presence.connections),
            (5, 2, 3)
        );
        assert_eq!(presence.members.len(), 1);
        assert_eq!(unreadable.load(Ordering::Relaxed), 1);
        let count = Shares::parse(&Value::Array(vec![Value::Int(4)]), &unreadable).unwrap();
        assert_eq!((count.subscribers, count.presence), (4, None));
    }

    #[test]
    fn entries_parse() {
        let s = |v: &str| Value::BulkString(v.as_bytes().to_vec());
        let value = Value::Array(vec![
            s("0-12"),
            Value::Array(vec![
                s("h"),
                s(&header(5, "77", PayloadKind::Json, Some("tick"))),
                s("d"),
                s("[1]"),
            ]),
        ]);
        let entry = entry(3, &value).unwrap();
        assert_eq!((entry.epoch, entry.offset, entry.time_ms), (3, 12, 5));
        assert_eq!(entry.identity, 77);
        assert_eq!(entry.event.as_deref(), Some("tick"));
        assert_eq!(&entry.data[..], b"[1]");
        // The header and the announcement agree: c2 is the header's lines
        // after the epoch and offset.
        let announced = format!(
            "c2\n3\n12\n{}\n[1]",
            header(5, "77", PayloadKind::Json, Some("tick"))
        );
        let Ok(Announcement::Message(heard)) = announcement(announced.as_bytes()) else {
            panic!("not a message");
        };
        assert_eq!((heard.offset, heard.time_ms, heard.identity), (12, 5, 77));
        assert_eq!(heard.event.as_deref(), Some("tick"));
        let headless = Value::Array(vec![s("0-1"), Value::Array(vec![s("d"), s("[1]")])]);
        assert!(super::entry(3, &headless).is_err());
        let bad = Value::Array(vec![s("12-1"), Value::Array(vec![])]);
        assert!(super::entry(3, &bad).is_err());
        assert!(super::entry(3, &s("x")).is_err());
    }
}
