//! What the library's log events need to know about the log's format.
//!
//! The subscriber itself is the binary's business (`rsh-cli` installs it,
//! as text or JSON); the one thing the library must know is whether lines
//! are JSON, so that text a peer chose is escaped once, not twice.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the installed subscriber writes JSON (see [`PeerText`]).
static JSON: AtomicBool = AtomicBool::new(false);

/// Tells [`PeerText`] whether log lines are written as JSON; whoever
/// installs the subscriber calls it (the default is text).
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Text a peer chose (a command line, a terminal name), as a log field
/// recorded with `?`. In text logs it is Debug-quoted, so a newline in it
/// cannot forge a log line; in JSON logs it is the text itself, which the
/// JSON encoder escapes (quoting it here as well would quote it twice).
pub struct PeerText<'a>(pub &'a [u8]);

impl fmt::Debug for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(self.0);
        if JSON.load(Ordering::Relaxed) {
            f.write_str(&text)
        } else {
            write!(f, "{text:?}")
        }
    }
}
