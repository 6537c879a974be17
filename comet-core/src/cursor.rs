//! Cursors: one opaque, URL-safe token holding a position in every channel of
//! a subscription.
//!
//! Layout (before base64url without padding): a version byte, then one
//! 24-byte entry per channel: the channel's key (FNV-1a of its name), its
//! epoch and the offset of the last message seen, each big-endian `u64`.
//! Fixed-size entries keep decoding trivial and total; 32 channels encode to
//! about 1 KiB, well under the protocol's 4 KiB. Clients never parse it.
//!
//! Version 3 (tagged) entries are 32 bytes: the same three words and the
//! identity of the message at that offset (0: none, or unknown). They are
//! followed by a tag: SipHash-2-4 of the entries under a key the engine's
//! nodes share ([`CursorKey`]). A node can then tell a cursor that a node
//! issued from one made up: only an issued cursor proves that the shared
//! history lost writes, when it is ahead of the history or names another
//! message than the history holds at its offset (the offset was given
//! again), and moves the channel to a new epoch; a made-up one is refused,
//! so that nobody can force a gap on every subscriber. Version 2 (tagged,
//! 24-byte entries, no identities) is still read and verified; version 1
//! (no tag, 24-byte entries) is still read and written, as unverified.

use crate::ChannelName;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use bytes::BufMut;
use std::fmt;

/// The longest cursor token accepted (PROTOCOL.md: at most 4 KiB).
pub const MAX_CURSOR_LEN: usize = 4096;

/// Untagged cursors (from before tags, or from an engine without a key).
const UNTAGGED: u8 = 1;
/// Tagged cursors from protocol 1.3, whose entries carry no identity.
const TAGGED_WITHOUT_IDENTITIES: u8 = 2;
/// Tagged cursors whose entries carry the identity of the message seen.
const TAGGED: u8 = 3;
/// An entry without the message's identity (versions 1 and 2).
const SHORT_ENTRY_LEN: usize = 24;
/// An entry with it (version 3).
const LONG_ENTRY_LEN: usize = 32;
const TAG_LEN: usize = 8;

/// The secret that tags cursors, shared by every node of one engine.
///
/// Engines hand it out with [`Engine::cursor_key`](crate::engine::Engine::cursor_key):
/// the Redis engine keeps one in Redis for all its nodes. The in-memory
/// engine has none (one process has no other node to trust, and a restarted
/// one must take its old cursors, with a gap).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CursorKey([u8; 16]);

impl CursorKey {
    /// A key from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// A fresh, unpredictable key.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&crate::epoch::random_epoch().to_le_bytes());
        bytes[8..].copy_from_slice(&crate::epoch::random_epoch().to_le_bytes());
        Self(bytes)
    }

    /// Its bytes (to store it where other nodes find it).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The tag of `entries` in a cursor of `version`: version 3 covers its
    /// version byte too, so that entries cannot be read as another layout
    /// under the same tag (version 2 did not; its tags still verify).
    fn tag(&self, version: u8, entries: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher24::new_with_key(&self.0);
        if version != TAGGED_WITHOUT_IDENTITIES {
            hasher.write(&[version]);
        }
        hasher.write(entries);
        hasher.finish()
    }
}

impl Provenance {
    /// This, unless it is forged: then what `other` says (a tag under
    /// another key the engine still honours).
    pub(crate) fn or_else(self, other: impl FnOnce() -> Provenance) -> Provenance {
        match self {
            Provenance::Forged => match other() {
                Provenance::Issued => Provenance::Issued,
                _ => Provenance::Forged,
            },
            known => known,
        }
    }
}

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

/// What a cursor's tag says of it, under an engine's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Provenance {
    /// A node of this engine issued it.
    Issued,
    /// It carries no tag, or the engine has no key: it may be anything.
    Unverified,
    /// Its tag is wrong: made up, or altered.
    Forged,
}

/// Where a subscription stands in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub(crate) key: u64,
    /// The channel history's epoch this offset belongs to.
    pub epoch: u64,
    /// The offset of the last message seen (0: none yet).
    pub offset: u64,
    /// The [identity](crate::Message::identity) of the message at `offset`,
    /// as the subscriber received it (0: none, or unknown). With it a node
    /// can tell that the shared history lost that message and gave its
    /// offset to another one, which the offset alone cannot show.
    pub identity: u64,
}

impl Position {
    /// A position in `channel`, of no known message.
    pub fn new(channel: &ChannelName, epoch: u64, offset: u64) -> Self {
        Self {
            key: channel.key(),
            epoch,
            offset,
            identity: 0,
        }
    }

    /// The same position, naming the identity of the message at its offset.
    pub fn with_identity(self, identity: u64) -> Self {
        Self { identity, ..self }
    }
}

/// A position in every channel of a subscription.
///
/// Obtain one from [`Hub::current_cursor`](crate::Hub::current_cursor), from
/// [`Item::cursor`](crate::Item::cursor) or by [`Cursor::decode`] of a token a
/// client sent back; hand it to [`Hub::subscribe`](crate::Hub::subscribe) to
/// resume exactly where it points.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    positions: Positions,
    /// The tag of the positions under the issuing engine's key, if any.
    tag: Option<u64>,
    /// Its entries carry identities (version 3); otherwise they are written
    /// as versions 1 and 2 wrote them, which the tag of a version 2 cursor
    /// covers.
    identities: bool,
}

/// One position inline (the common one-channel subscription, built per
/// delivered item without allocating), several on the heap.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
enum Positions {
    #[default]
    None,
    One(Position),
    Many(Box<[Position]>),
}

impl Cursor {
    /// A cursor at `positions`, one per channel in the subscription's order.
    pub(crate) fn from_positions<I>(positions: I) -> Self
    where
        I: IntoIterator<Item = Position>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut positions = positions.into_iter();
        let positions = match positions.len() {
            0 => Positions::None,
            1 => Positions::One(positions.next().expect("one position")),
            _ => Positions::Many(positions.collect()),
        };
        Self {
            positions,
            tag: None,
            identities: false,
        }
    }

    /// The same positions, tagged under `key` with their identities
    /// (untagged, and without them, when there is no key: nobody could
    /// trust them).
    pub(crate) fn signed(mut self, key: Option<CursorKey>) -> Self {
        self.identities = key.is_some();
        self.tag = key.map(|key| self.with_entries(|entries| key.tag(TAGGED, entries)));
        self
    }

    /// The cursor of a one-channel subscription at `position`, which is
    /// that of `message`, just read: every such subscriber has this very
    /// cursor, so its tag is computed once per message, not per delivery.
    pub(crate) fn after_message(
        position: Position,
        key: Option<CursorKey>,
        message: &crate::Message,
    ) -> Self {
        let cursor = Self::from_positions([position]);
        let Some(key) = key else {
            return cursor.signed(None);
        };
        let mut cursor = Self {
            identities: true,
            ..cursor
        };
        let tag = message.cursor_tag(key, position.key, || {
            cursor.with_entries(|e| key.tag(TAGGED, e))
        });
        debug_assert_eq!(Some(tag), cursor.clone().signed(Some(key)).tag);
        cursor.tag = Some(tag);
        cursor
    }

    /// A one-channel cursor's channel key and tag: what tells it from
    /// another one-channel cursor after the same message.
    pub(crate) fn one_channel(&self) -> Option<(u64, Option<u64>)> {
        match &self.positions {
            Positions::One(position) => Some((position.key, self.tag)),
            _ => None,
        }
    }

    /// Whether a node holding `key` issued it.
    pub(crate) fn provenance(&self, key: Option<CursorKey>) -> Provenance {
        match (self.tag, key) {
            (Some(tag), Some(key)) if self.with_entries(|e| key.tag(self.version(), e)) == tag => {
                Provenance::Issued
            }
            (Some(_), Some(_)) => Provenance::Forged,
            _ => Provenance::Unverified,
        }
    }

    fn positions(&self) -> &[Position] {
        match &self.positions {
            Positions::None => &[],
            Positions::One(p) => std::slice::from_ref(p),
            Positions::Many(ps) => ps,
        }
    }

    /// The position this cursor holds for `channel`, if it names it.
    pub fn position(&self, channel: &ChannelName) -> Option<Position> {
        self.position_by_key(channel.key())
    }

    pub(crate) fn position_by_key(&self, key: u64) -> Option<Position> {
        self.positions().iter().copied().find(|p| p.key == key)
    }

    /// How many channels it names.
    pub fn len(&self) -> usize {
        self.positions().len()
    }

    /// True when it names no channel.
    pub fn is_empty(&self) -> bool {
        self.positions().is_empty()
    }

    /// The token: base64url, no padding, `[A-Za-z0-9_-]` only.
    pub fn encode(&self) -> String {
        let mut token = String::with_capacity(self.encoded_len());
        self.with_raw(|raw| URL_SAFE_NO_PAD.encode_string(raw, &mut token));
        token
    }

    /// Appends the token to `out` (a `Vec<u8>`, a `BytesMut`...) without
    /// allocating, for hot paths that build a frame around it.
    pub fn encode_into(&self, out: &mut impl BufMut) {
        self.with_raw(|raw| {
            // 48 bytes make 64 characters and no padding, so encoding block
            // by block writes what encoding the whole would.
            let mut block = [0u8; 64];
            for chunk in raw.chunks(48) {
                let written = URL_SAFE_NO_PAD.encode_slice(chunk, &mut block).unwrap_or(0);
                out.put_slice(&block[..written]);
            }
        });
    }

    /// The token's length in bytes, so frames around it can be sized exactly.
    pub fn encoded_len(&self) -> usize {
        (4 * self.raw_len()).div_ceil(3)
    }

    /// The unencoded token's length.
    fn raw_len(&self) -> usize {
        1 + self.entry_len() * self.len() + if self.tag.is_some() { TAG_LEN } else { 0 }
    }

    fn entry_len(&self) -> usize {
        if self.identities {
            LONG_ENTRY_LEN
        } else {
            SHORT_ENTRY_LEN
        }
    }

    fn version(&self) -> u8 {
        match (self.tag, self.identities) {
            (None, _) => UNTAGGED,
            (Some(_), false) => TAGGED_WITHOUT_IDENTITIES,
            (Some(_), true) => TAGGED,
        }
    }

    /// Calls `f` with the unencoded token: on the stack for one channel (the
    /// common case, per delivered item), on the heap for more.
    fn with_raw<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        let entries = self.entry_len() * self.len();
        self.with_buffer(self.raw_len(), |raw| {
            raw[0] = self.version();
            fill(&mut raw[1..=entries], self.positions(), self.identities);
            if let Some(tag) = self.tag {
                raw[1 + entries..].copy_from_slice(&tag.to_be_bytes());
            }
            f(raw)
        })
    }

    /// Calls `f` with the entries alone (what the tag covers).
    fn with_entries<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        self.with_buffer(self.entry_len() * self.len(), |entries| {
            fill(entries, self.positions(), self.identities);
            f(entries)
        })
    }

    /// Calls `f` with a zeroed buffer of `len` bytes: on the stack for up to
    /// one channel, on the heap for more.
    fn with_buffer<T>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
        const INLINE: usize = 1 + LONG_ENTRY_LEN + TAG_LEN;
        if len <= INLINE {
            let mut raw = [0u8; INLINE];
            f(&mut raw[..len])
        } else {
            f(&mut vec![0u8; len])
        }
    }

    /// Reads a token. Total: any string gives a cursor or a typed error.
    pub fn decode(token: &str) -> Result<Self, CursorError> {
        if token.is_empty() {
            return Err(CursorError::Empty);
        }
        if token.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong { len: token.len() });
        }
        // On the stack: a cursor is decoded for every resumed request.
        let mut buffer = [0u8; MAX_CURSOR_LEN / 4 * 3];
        let len = URL_SAFE_NO_PAD
            .decode_slice(token, &mut buffer)
            .map_err(|_| CursorError::Malformed)?;
        let (&version, rest) = buffer[..len].split_first().ok_or(CursorError::Malformed)?;
        let identities = version == TAGGED;
        let (entries, tag) = match version {
            UNTAGGED => (rest, None),
            TAGGED | TAGGED_WITHOUT_IDENTITIES if rest.len() >= TAG_LEN => {
                let (entries, tag) = rest.split_at(rest.len() - TAG_LEN);
                let tag = u64::from_be_bytes(tag.try_into().map_err(|_| CursorError::Malformed)?);
                (entries, Some(tag))
            }
            TAGGED | TAGGED_WITHOUT_IDENTITIES => return Err(CursorError::Malformed),
            _ => return Err(CursorError::UnknownVersion(version)),
        };
        let entry_len = if identities {
            LONG_ENTRY_LEN
        } else {
            SHORT_ENTRY_LEN
        };
        if entries.len() % entry_len != 0 {
            return Err(CursorError::Malformed);
        }
        let position = |entry: &[u8]| {
            let word = |i: usize| {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&entry[i * 8..i * 8 + 8]);
                u64::from_be_bytes(bytes)
            };
            Position {
                key: word(0),
                epoch: word(1),
                offset: word(2),
                identity: if identities { word(3) } else { 0 },
            }
        };
        if entries.len() == entry_len {
            // One channel, the common case: inline, no allocation.
            return Ok(Self {
                positions: Positions::One(position(entries)),
                tag,
                identities,
            });
        }
        let mut positions: Vec<Position> = Vec::with_capacity(entries.len() / entry_len);
        for entry in entries.chunks_exact(entry_len) {
            let position = position(entry);
            if positions.iter().any(|p| p.key == position.key) {
                return Err(CursorError::DuplicateChannel);
            }
            positions.push(position);
        }
        Ok(Self {
            tag,
            identities,
            ..Self::from_positions(positions)
        })
    }
}

/// Writes `positions` as entries into `out` (exactly their size), with
/// their identities or without.
fn fill(out: &mut [u8], positions: &[Position], identities: bool) {
    let len = if identities {
        LONG_ENTRY_LEN
    } else {
        SHORT_ENTRY_LEN
    };
    for (p, entry) in positions.iter().zip(out.chunks_exact_mut(len)) {
        entry[..8].copy_from_slice(&p.key.to_be_bytes());
        entry[8..16].copy_from_slice(&p.epoch.to_be_bytes());
        entry[16..24].copy_from_slice(&p.offset.to_be_bytes());
        if identities {
            entry[24..].copy_from_slice(&p.identity.to_be_bytes());
        }
    }
}

/// A cursor at these positions (the first of each channel), untagged: a
/// node that holds a key treats it as unverified (see [`CursorKey`]).
impl FromIterator<Position> for Cursor {
    fn from_iter<I: IntoIterator<Item = Position>>(positions: I) -> Self {
        let mut kept: Vec<Position> = Vec::new();
        for position in positions {
            if !kept.iter().any(|p| p.key == position.key) {
                kept.push(position);
            }
        }
        Self::from_positions(kept)
    }
}

/// A one-channel cursor at `position`, untagged: a node that holds a key
/// treats it as unverified (see [`CursorKey`]).
impl From<Position> for Cursor {
    fn from(position: Position) -> Self {
        Self {
            positions: Positions::One(position),
            tag: None,
            identities: false,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cursor").field(&self.encode()).finish()
    }
}

impl std::str::FromStr for Cursor {
    type Err = CursorError;
    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Self::decode(token)
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Cursor::decode(&token).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorError {
    /// The token is empty.
    Empty,
    /// The token is longer than [`MAX_CURSOR_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The token is not one this server produced (bad characters or length).
    Malformed,
    /// The token comes from a newer or unknown cursor format.
    UnknownVersion(u8),
    /// The token names one channel twice.
    DuplicateChannel,
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("cursor is empty"),
            Self::TooLong { len } => {
                write!(
                    f,
                    "cursor is {len} bytes long, the limit is {MAX_CURSOR_LEN}"
                )
            }
            Self::Malformed => {
                f.write_str("cursor is malformed: pass back a cursor the server sent")
            }
            Self::UnknownVersion(v) => write!(f, "cursor has unknown format version {v}"),
            Self::DuplicateChannel => f.write_str("cursor names a channel twice"),
        }
    }
}

impl std::error::Error for CursorError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn position() -> impl Strategy<Value = Position> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(key, epoch, offset)| Position {
            key,
            epoch,
            offset,
            identity: 0,
        })
    }

    fn identified() -> impl Strategy<Value = Position> {
        (position(), any::<u64>()).prop_map(|(p, identity)| p.with_identity(identity))
    }

    proptest! {
        #[test]
        fn round_trips(positions in proptest::collection::vec(position(), 0..40)) {
            let mut seen = std::collections::HashSet::new();
            let positions: Vec<_> = positions.into_iter().filter(|p| seen.insert(p.key)).collect();
            let cursor = Cursor::from_positions(positions);
            let token = cursor.encode();
            prop_assert!(token.len() <= MAX_CURSOR_LEN);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.~-".contains(&b)));
            prop_assert_eq!(Cursor::decode(&token).unwrap(), cursor.clone());
            // Appending writes the same token, of the announced length,
            // whatever the buffer already holds.
            let mut appended = b"head".to_vec();
            cursor.encode_into(&mut appended);
            prop_assert_eq!(&appended[4..], token.as_bytes());
            prop_assert_eq!(token.len(), cursor.encoded_len());
            let mut bytes = bytes::BytesMut::new();
            cursor.encode_into(&mut bytes);
            prop_assert_eq!(&bytes[..], token.as_bytes());
        }

        #[test]
        fn tagged_cursors_round_trip_with_identities(
            positions in proptest::collection::vec(identified(), 0..33),
            key in any::<[u8; 16]>(),
        ) {
            let mut seen = std::collections::HashSet::new();
            let positions: Vec<_> = positions.into_iter().filter(|p| seen.insert(p.key)).collect();
            let key = CursorKey::from_bytes(key);
            let cursor = Cursor::from_positions(positions).signed(Some(key));
            let token = cursor.encode();
            prop_assert!(token.len() <= MAX_CURSOR_LEN);
            prop_assert_eq!(token.len(), cursor.encoded_len());
            let decoded = Cursor::decode(&token).unwrap();
            prop_assert_eq!(decoded.provenance(Some(key)), Provenance::Issued);
            prop_assert_eq!(decoded, cursor);
        }

        #[test]
        fn decoding_any_string_never_panics(token in ".{0,200}") {
            let _ = Cursor::decode(&token);
        }

        #[test]
        fn decoding_any_url_safe_string_never_panics(token in "[A-Za-z0-9_.~-]{0,300}") {
            if let Ok(cursor) = Cursor::decode(&token) {
                // Whatever decodes re-encodes to the same token.
                prop_assert_eq!(cursor.encode(), token);
            }
        }
    }

    #[test]
    fn hostile_tokens_are_typed_errors() {
        assert_eq!(Cursor::decode(""), Err(CursorError::Empty));
        assert_eq!(Cursor::decode("!!!"), Err(CursorError::Malformed));
        assert_eq!(
            Cursor::decode("AQ=="),
            Err(CursorError::Malformed),
            "padding"
        );
        assert_eq!(Cursor::decode("AQ%3D"), Err(CursorError::Malformed));
        assert_eq!(
            Cursor::decode("A"),
            Err(CursorError::Malformed),
            "impossible length"
        );
        assert_eq!(Cursor::decode("BA"), Err(CursorError::UnknownVersion(4)));
        assert_eq!(Cursor::decode("Ag"), Err(CursorError::Malformed), "no tag");
        assert_eq!(Cursor::decode("Aw"), Err(CursorError::Malformed), "no tag");
        assert_eq!(
            Cursor::decode("AQE"),
            Err(CursorError::Malformed),
            "truncated entry"
        );
        assert_eq!(Cursor::decode("</script>"), Err(CursorError::Malformed));
        let long = "A".repeat(MAX_CURSOR_LEN + 1);
        assert_eq!(
            Cursor::decode(&long),
            Err(CursorError::TooLong { len: long.len() })
        );
        let p = Position {
            key: 7,
            epoch: 1,
            offset: 2,
            identity: 0,
        };
        let twice = Cursor::from_positions(vec![p, p]).encode();
        assert_eq!(Cursor::decode(&twice), Err(CursorError::DuplicateChannel));
    }

    #[test]
    fn empty_cursor_is_valid() {
        let token = Cursor::default().encode();
        assert_eq!(token, "AQ");
        assert!(Cursor::decode(&token).unwrap().is_empty());
    }

    #[test]
    fn thirty_two_channels_fit_in_the_limit() {
        let positions: Vec<Position> = (0..32)
            .map(|i| Position {
                key: i,
                epoch: u64::MAX,
                offset: u64::MAX,
                identity: u64::MAX,
            })
            .collect();
        assert!(Cursor::from_positions(positions.clone()).encode().len() < 1100);
        let tagged = Cursor::from_positions(positions).signed(Some(CursorKey::random()));
        assert!(tagged.encode().len() < 1400);
    }

    #[test]
    fn tags_tell_issued_cursors_from_made_up_ones() {
        let key = CursorKey::random();
        let other = CursorKey::random();
        let position = Position {
            key: 7,
            epoch: 9,
            offset: 11,
            identity: 0,
        };
        let issued = Cursor::from(position).signed(Some(key));
        let token = issued.encode();
        let decoded = Cursor::decode(&token).unwrap();
        assert_eq!(decoded, issued);
        assert_eq!(decoded.provenance(Some(key)), Provenance::Issued);
        assert_eq!(decoded.provenance(Some(other)), Provenance::Forged);
        assert_eq!(decoded.provenance(None), Provenance::Unverified);
        // Moving the offset without the key breaks the tag.
        let moved = Cursor {
            positions: Positions::One(Position {
                offset: 12,
                ..position
            }),
            ..issued.clone()
        };
        let moved = Cursor::decode(&moved.encode()).unwrap();
        assert_eq!(moved.provenance(Some(key)), Provenance::Forged);
        // So does naming another message at the same offset.
        let other_message = Cursor {
            positions: Positions::One(position.with_identity(99)),
            ..issued.clone()
        };
        let other_message = Cursor::decode(&other_message.encode()).unwrap();
        assert_eq!(other_message.provenance(Some(key)), Provenance::Forged);
        // Identities travel in issued cursors.
        let identified = Cursor::from(position.with_identity(42)).signed(Some(key));
        let decoded = Cursor::decode(&identified.encode()).unwrap();
        assert_eq!(decoded.position_by_key(7).map(|p| p.identity), Some(42));
        // Tagged cursors of protocol 1.3 (version 2: no identities) are still
        // verified, and name no identity.
        let v2 = Cursor {
            positions: Positions::One(position),
            tag: None,
            identities: false,
        };
        let v2 = Cursor {
            tag: Some(v2.with_entries(|entries| key.tag(TAGGED_WITHOUT_IDENTITIES, entries))),
            ..v2
        };
        let v2_token = v2.encode();
        assert_eq!(URL_SAFE_NO_PAD.decode(&v2_token).unwrap()[0], 2);
        let decoded = Cursor::decode(&v2_token).unwrap();
        assert_eq!(decoded.provenance(Some(key)), Provenance::Issued);
        assert_eq!(decoded.position_by_key(7).map(|p| p.identity), Some(0));
        assert_eq!(decoded.encode(), v2_token);
        // Three version 3 entries are as many bytes as four version 2 ones:
        // relabelled, they do not verify under the same tag.
        let three = Cursor::from_positions([1, 2, 3].map(|k| Position { key: k, ..position }))
            .signed(Some(key));
        let mut raw = URL_SAFE_NO_PAD.decode(three.encode()).unwrap();
        raw[0] = TAGGED_WITHOUT_IDENTITIES;
        let relabelled = Cursor::decode(&URL_SAFE_NO_PAD.encode(&raw)).unwrap();
        assert_eq!(relabelled.len(), 4);
        assert_eq!(relabelled.provenance(Some(key)), Provenance::Forged);
        // Untagged (version 1) cursors still read, as unverified.
        let untagged = Cursor::decode(&Cursor::from(position).encode()).unwrap();
        assert_eq!(untagged.provenance(Some(key)), Provenance::Unverified);
        assert_eq!(untagged.position_by_key(7), Some(position));
        // Several channels: the tag covers them all.
        let two =
            Cursor::from_positions([position, Position { key: 8, ..position }]).signed(Some(key));
        let decoded = Cursor::decode(&two.encode()).unwrap();
        assert_eq!(decoded.provenance(Some(key)), Provenance::Issued);
        assert_eq!(decoded.len(), 2);
        assert_eq!(two.encoded_len(), two.encode().len());
        assert_eq!(issued.encoded_len(), token.len());
    }
}
