//! The escape character of an interactive session, as ssh's (`~.`, `~^Z`,
//! `~?`, `~~`): a pure state machine over the bytes typed, so it can be
//! tested without a terminal.
//!
//! As in ssh, the escape character means something only as the first
//! character of a line (right after a `\r` or `\n`, or at the start of the
//! session); anywhere else it is an ordinary byte. After it:
//! `.` disconnects, Ctrl-Z suspends the client, `?` asks for the list of
//! escapes, the escape character itself sends one escape character, and
//! anything else sends both characters, as if nothing had happened. The
//! escape character is held back until the next byte says what it was, even
//! across reads.

/// ssh's default escape character.
pub const DEFAULT_ESCAPE_CHAR: u8 = b'~';

/// Ctrl-Z, which after the escape character suspends the client.
const CTRL_Z: u8 = 0x1a;

/// Something the user asked of the client itself by an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeAction {
    /// `~.`: end the session and disconnect.
    Disconnect,
    /// `~^Z`: give the local terminal back and stop the client (job control).
    Suspend,
    /// `~?`: print the list of escape sequences.
    Help,
}

/// The escape filter of one session.
#[derive(Debug, Clone)]
pub struct EscapeFilter {
    escape: Option<u8>,
    /// The last byte passed on ended a line (or nothing was passed yet).
    at_line_start: bool,
    /// The escape character was seen at a line start; the next byte decides.
    pending: bool,
}

impl EscapeFilter {
    /// A filter for escape character `escape`; `None` passes every byte
    /// through unchanged (`-e none`).
    pub fn new(escape: Option<u8>) -> Self {
        EscapeFilter {
            escape,
            at_line_start: true,
            pending: false,
        }
    }

    /// The escape character, if any.
    pub fn escape_char(&self) -> Option<u8> {
        self.escape
    }

    /// Filters `input`, appending the bytes to send to the remote side to
    /// `out`, up to the first escape sequence that asks for an action.
    ///
    /// Returns how many bytes of `input` were consumed and the action, if
    /// one stopped the scan. The caller acts on it (after sending what `out`
    /// holds), then feeds the rest, `&input[consumed..]`: bytes typed after
    /// `~^Z` are sent once the client is continued, as in ssh.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<EscapeAction>) {
        let Some(escape) = self.escape else {
            out.extend_from_slice(input);
            return (input.len(), None);
        };
        for (index, &byte) in input.iter().enumerate() {
            if self.pending {
                self.pending = false;
                let action = match byte {
                    b'.' => Some(EscapeAction::Disconnect),
                    CTRL_Z => Some(EscapeAction::Suspend),
                    b'?' => Some(EscapeAction::Help),
                    _ => None,
                };
                if let Some(action) = action {
                    // The next byte is again at a line start, so `~?` then
                    // `~.` works without a newline in between, as in ssh.
                    return (index + 1, Some(action));
                }
                if byte != escape {
                    // Not an escape after all: both characters go through.
                    out.push(escape);
                }
            } else if self.at_line_start && byte == escape {
                self.pending = true;
                continue;
            }
            self.at_line_start = byte == b'\r' || byte == b'\n';
            out.push(byte);
        }
        (input.len(), None)
    }

    /// Filters all of `input`, for callers (and tests) that want the whole
    /// picture at once: the pieces to send and the actions, in order.
    pub fn feed_all(&mut self, mut input: &[u8]) -> Vec<Filtered> {
        let mut pieces = Vec::new();
        loop {
            let mut out = Vec::new();
            let (consumed, action) = self.feed(input, &mut out);
            if !out.is_empty() {
                pieces.push(Filtered::Send(out));
            }
            match action {
                Some(action) => pieces.push(Filtered::Action(action)),
                None => return pieces,
            }
            input = &input[consumed..];
        }
    }

    /// What ssh prints for `~?`, with `\r\n` line ends because the local
    /// terminal is in raw mode.
    pub(crate) fn help_text(&self) -> String {
        let esc = self.escape.map_or_else(|| "~".to_owned(), display_char);
        format!(
            "{esc}?\r\n\
             Supported escape sequences:\r\n \
             {esc}.   - terminate connection\r\n \
             {esc}^Z  - suspend rsh-client\r\n \
             {esc}?   - this message\r\n \
             {esc}{esc}   - send the escape character by typing it twice\r\n\
             (Note that escapes are only recognized immediately after newline.)\r\n"
        )
    }

    /// The line printed when `action` is taken (ssh echoes the sequence,
    /// which the raw terminal did not show).
    pub fn action_echo(&self, action: EscapeAction) -> String {
        let esc = self.escape.map_or_else(|| "~".to_owned(), display_char);
        match action {
            EscapeAction::Disconnect => format!("{esc}.\r\n"),
            EscapeAction::Suspend => format!("{esc}^Z [suspend rsh-client]\r\n"),
            EscapeAction::Help => self.help_text(),
        }
    }
}

/// One piece of [`EscapeFilter::feed_all`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// Bytes to send to the remote side.
    Send(Vec<u8>),
    /// An escape sequence's action.
    Action(EscapeAction),
}

/// A control character as `^X`, anything else as itself.
fn display_char(byte: u8) -> String {
    if byte < 0x20 {
        format!("^{}", char::from(byte + 64))
    } else if byte == 0x7f {
        "^?".to_owned()
    } else {
        char::from(byte).to_string()
    }
}

/// Parses the argument of `-e` as ssh does: one character, `^X` for a
/// control character, or `none` for no escape character.
///
/// # Errors
/// A message naming the argument when it is none of these.
pub fn parse_escape_char(arg: &str) -> Result<Option<u8>, String> {
    let bytes = arg.as_bytes();
    match bytes {
        [b'^', c] if (64..128).contains(c) => Ok(Some(c & 31)),
        [c] => Ok(Some(*c)),
        _ if arg == "none" => Ok(None),
        _ => Err(format!(
            "bad escape character '{arg}': use one character, ^X, or none"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use EscapeAction::*;

    fn send(bytes: &[u8]) -> Filtered {
        Filtered::Send(bytes.to_vec())
    }

    fn run(input: &[u8]) -> Vec<Filtered> {
        EscapeFilter::new(Some(b'~')).feed_all(input)
    }

    #[test]
    fn tilde_dot_at_session_start_disconnects() {
        assert_eq!(run(b"~."), vec![Filtered::Action(Disconnect)]);
    }

    #[test]
    fn tilde_dot_after_a_newline_disconnects_after_the_line_is_sent() {
        assert_eq!(
            run(b"ls\r~.rest"),
            vec![send(b"ls\r"), Filtered::Action(Disconnect), send(b"rest")]
        );
        assert_eq!(
            run(b"ls\n~."),
            vec![send(b"ls\n"), Filtered::Action(Disconnect)]
        );
    }

    #[test]
    fn tilde_in_the_middle_of_a_line_is_an_ordinary_byte() {
        assert_eq!(run(b"a~."), vec![send(b"a~.")]);
        assert_eq!(run(b"cd ~/src\r"), vec![send(b"cd ~/src\r")]);
    }

    #[test]
    fn tilde_tilde_sends_one_tilde_and_the_line_goes_on() {
        assert_eq!(run(b"~~"), vec![send(b"~")]);
        // After `~~` we are no longer at a line start: `~.` is literal.
        assert_eq!(run(b"~~~."), vec![send(b"~~.")]);
    }

    #[test]
    fn tilde_then_another_character_sends_both() {
        assert_eq!(run(b"~x"), vec![send(b"~x")]);
        assert_eq!(run(b"~#"), vec![send(b"~#")]);
        // `~` then a newline: both go, and the next line may escape again.
        assert_eq!(
            run(b"~\r~."),
            vec![send(b"~\r"), Filtered::Action(Disconnect)]
        );
    }

    #[test]
    fn ctrl_z_suspends_and_later_bytes_follow() {
        assert_eq!(
            run(b"\r~\x1afg"),
            vec![send(b"\r"), Filtered::Action(Suspend), send(b"fg")]
        );
    }

    #[test]
    fn question_mark_asks_for_help_and_escapes_work_right_after() {
        assert_eq!(
            run(b"~?~."),
            vec![Filtered::Action(Help), Filtered::Action(Disconnect)]
        );
    }

    #[test]
    fn an_escape_split_across_reads_is_held_back_then_resolved() {
        let mut filter = EscapeFilter::new(Some(b'~'));
        assert_eq!(filter.feed_all(b"echo\r~"), vec![send(b"echo\r")]);
        assert_eq!(filter.feed_all(b"."), vec![Filtered::Action(Disconnect)]);

        let mut filter = EscapeFilter::new(Some(b'~'));
        assert_eq!(filter.feed_all(b"~"), vec![]);
        assert_eq!(filter.feed_all(b"x"), vec![send(b"~x")]);
    }

    #[test]
    fn feed_stops_at_the_action_and_reports_what_it_consumed() {
        let mut filter = EscapeFilter::new(Some(b'~'));
        let mut out = Vec::new();
        let input = b"a\r~\x1ab";
        let (consumed, action) = filter.feed(input, &mut out);
        assert_eq!((consumed, action), (4, Some(Suspend)));
        assert_eq!(out, b"a\r");
        let (consumed, action) = filter.feed(&input[4..], &mut out);
        assert_eq!((consumed, action), (1, None));
        assert_eq!(out, b"a\rb");
    }

    #[test]
    fn another_escape_character_replaces_the_tilde() {
        let mut filter = EscapeFilter::new(Some(b'%'));
        assert_eq!(
            filter.feed_all(b"~.%."),
            vec![send(b"~.%."),] // `%` is not at a line start
        );
        let mut filter = EscapeFilter::new(Some(b'%'));
        assert_eq!(
            filter.feed_all(b"~.\r%."),
            vec![send(b"~.\r"), Filtered::Action(Disconnect)]
        );
    }

    #[test]
    fn a_control_escape_character_works() {
        let mut filter = EscapeFilter::new(Some(0x1d)); // ^]
        assert_eq!(
            filter.feed_all(b"\x1d\x1d\r\x1d."),
            vec![send(b"\x1d\r"), Filtered::Action(Disconnect)]
        );
        assert!(filter.help_text().contains("^]."));
    }

    #[test]
    fn no_escape_character_passes_everything() {
        let mut filter = EscapeFilter::new(None);
        assert_eq!(filter.feed_all(b"~.\r~\x1a~?"), vec![send(b"~.\r~\x1a~?")]);
    }

    #[test]
    fn help_and_echoes_use_raw_line_ends_and_the_escape_character() {
        let filter = EscapeFilter::new(Some(b'~'));
        let help = filter.help_text();
        assert!(help.starts_with("~?\r\nSupported escape sequences:\r\n"));
        assert!(help.contains(" ~.   - terminate connection\r\n"));
        assert!(help.contains(" ~~   - send the escape character"));
        assert!(
            !help.replace("\r\n", "").contains('\n'),
            "bare \\n in {help:?}"
        );
        assert_eq!(filter.action_echo(Disconnect), "~.\r\n");
        assert_eq!(filter.action_echo(Suspend), "~^Z [suspend rsh-client]\r\n");
    }

    #[test]
    fn parses_e_arguments_as_ssh_does() {
        assert_eq!(parse_escape_char("~"), Ok(Some(b'~')));
        assert_eq!(parse_escape_char("%"), Ok(Some(b'%')));
        assert_eq!(parse_escape_char("^]"), Ok(Some(0x1d)));
        assert_eq!(parse_escape_char("^a"), Ok(Some(0x01)));
        assert_eq!(parse_escape_char("^"), Ok(Some(b'^')));
        assert_eq!(parse_escape_char("none"), Ok(None));
        assert!(parse_escape_char("").is_err());
        assert!(parse_escape_char("ab").is_err());
        assert!(parse_escape_char("^1").is_err());
        assert!(parse_escape_char("é").is_err());
    }

    /// Splits `input` at the given points and feeds the pieces in turn.
    fn feed_split(filter: &mut EscapeFilter, input: &[u8], cuts: &[usize]) -> Vec<Filtered> {
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            pieces.extend(filter.feed_all(&input[start..cut]));
            start = cut;
        }
        pieces
    }

    /// Concatenates consecutive sends, so results of different splits compare.
    fn merged(pieces: Vec<Filtered>) -> Vec<Filtered> {
        let mut merged: Vec<Filtered> = Vec::new();
        for piece in pieces {
            match (merged.last_mut(), piece) {
                (Some(Filtered::Send(last)), Filtered::Send(more)) => last.extend(more),
                (_, piece) => merged.push(piece),
            }
        }
        merged
    }

    proptest! {
        #[test]
        fn disabled_filter_is_the_identity(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut filter = EscapeFilter::new(None);
            let mut out = Vec::new();
            prop_assert_eq!(filter.feed(&input, &mut out), (input.len(), None));
            prop_assert_eq!(out, input);
        }

        #[test]
        fn input_without_the_escape_character_passes_unchanged(
            input in proptest::collection::vec(any::<u8>().prop_filter("no ~", |b| *b != b'~'), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let mut filter = EscapeFilter::new(Some(b'~'));
            let pieces = merged(feed_split(&mut filter, &input, &cuts));
            let expected = if input.is_empty() { vec![] } else { vec![Filtered::Send(input)] };
            prop_assert_eq!(pieces, expected);
        }

        #[test]
        fn how_input_is_split_into_reads_does_not_matter(
            input in proptest::collection::vec(
                prop_oneof![Just(b'~'), Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'?'), Just(0x1a), any::<u8>()],
                0..256,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let whole = merged(EscapeFilter::new(Some(b'~')).feed_all(&input));
            let split = merged(feed_split(&mut EscapeFilter::new(Some(b'~')), &input, &cuts));
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn nothing_is_lost_but_escapes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            // What is sent is what was typed, in order, less escape sequences.
            let sent: Vec<u8> = EscapeFilter::new(Some(b'~'))
                .feed_all(&input)
                .into_iter()
                .filter_map(|piece| match piece { Filtered::Send(bytes) => Some(bytes), Filtered::Action(_) => None })
                .flatten()
                .collect();
            let mut rest = input.iter();
            for byte in &sent {
                prop_assert!(rest.any(|typed| typed == byte), "{:?} not from {:?}", sent, input);
            }
        }
    }
}
