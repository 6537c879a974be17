//! Any string decodes to a cursor or a typed error, never a panic; whatever
//! decodes re-encodes to the same token.
#![no_main]

use comet_core::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        if let Ok(cursor) = Cursor::decode(token) {
            assert_eq!(cursor.encode(), token);
        }
    }
});
