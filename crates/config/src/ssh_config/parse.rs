//! Reading the file: lines into keywords and arguments, arguments into
//! typed values, `Host` blocks and `Include`s into entries with the
//! conditions under which they apply.

use super::error::{unsupported, ConfigFileError, Origin};
use super::keywords::{Entry, Ignored, Item, Key, StrictHostKeyChecking, Value, SSH_KEYWORDS};
use super::matching::{glob_match, glob_paths, HostLine};
use super::tokens::check_tokens;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How deep `Include` may nest, as ssh's `READCONF_MAX_DEPTH`.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// What one line says.
pub(super) enum Directive {
    Item(Item),
    Host(HostLine),
    Include(Vec<String>),
    IgnoreUnknown(Vec<String>),
}

pub(super) fn read_config(path: &Path) -> Result<String, ConfigFileError> {
    let io = |source| ConfigFileError::Io {
        path: path.to_owned(),
        cause: source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    // ssh's secure_permissions, for the main file and every Include alike:
    // the user's own or root's, and nobody else may write it.
    let owner = meta.uid();
    if owner != 0 && owner != nix::unistd::geteuid().as_raw() {
        return Err(ConfigFileError::BadOwner {
            path: path.to_owned(),
            owner,
        });
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(ConfigFileError::Permissions {
            path: path.to_owned(),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Fills a [`super::ClientConfig`]'s `Host` lines and entries from files.
pub(super) struct Parser<'a> {
    /// The `Host` lines met so far; entries name them by index.
    pub(super) hosts: &'a mut Vec<HostLine>,
    pub(super) entries: &'a mut Vec<Entry>,
    /// For `~/` in `Include`.
    pub(super) home: Option<&'a Path>,
    pub(super) base: &'a Path,
    /// `IgnoreUnknown` patterns met so far, lowercase. As ssh, they apply to
    /// the lines after them.
    pub(super) ignore_unknown: Vec<String>,
}

impl Parser<'_> {
    /// Parses one file whose lines all sit under the `outer` conditions.
    pub(super) fn file(
        &mut self,
        text: &str,
        name: &Path,
        outer: &[usize],
        depth: usize,
    ) -> Result<(), ConfigFileError> {
        let mut conditions = outer.to_vec();
        for (index, line) in text.lines().enumerate() {
            let origin = Origin::File {
                path: name.to_owned(),
                line: index + 1,
            };
            let Some((keyword, args)) = split_line(line, &origin)? else {
                continue;
            };
            match parse_directive(&keyword, &args, &origin, &self.ignore_unknown)? {
                Directive::Host(host) => {
                    self.hosts.push(host);
                    conditions = outer.to_vec();
                    conditions.push(self.hosts.len() - 1);
                }
                Directive::Item(item) => self.entries.push(Entry {
                    conditions: conditions.clone(),
                    item,
                }),
                Directive::IgnoreUnknown(patterns) => self.ignore_unknown.extend(patterns),
                Directive::Include(patterns) => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(ConfigFileError::Syntax {
                            origin,
                            reason: format!("Include nested deeper than {MAX_INCLUDE_DEPTH}"),
                        });
                    }
                    for pattern in patterns {
                        let pattern = self.include_path(&pattern);
                        for path in glob_paths(&pattern) {
                            let text = read_config(&path)?;
                            self.file(&text, &path, &conditions, depth + 1)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn include_path(&self, pattern: &str) -> PathBuf {
        if let (Some(rest), Some(home)) = (pattern.strip_prefix("~/"), self.home) {
            return home.join(rest);
        }
        self.base.join(pattern)
    }
}

pub(super) fn split_line(
    line: &str,
    origin: &Origin,
) -> Result<Option<(String, Vec<String>)>, ConfigFileError> {
    let line = line.trim_start_matches([' ', '\t', '\r']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let key_end = line
        .find(|c: char| c.is_ascii_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = &line[..key_end];
    if keyword.is_empty() {
        return Err(ConfigFileError::Syntax {
            origin: origin.clone(),
            reason: "missing keyword before '='".into(),
        });
    }
    // ssh's strdelim: whitespace, at most one '=', whitespace.
    let rest = line[key_end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let args = split_args(rest).map_err(|reason| ConfigFileError::Syntax {
        origin: origin.clone(),
        reason: reason.into(),
    })?;
    Ok(Some((keyword.to_owned(), args)))
}

/// Splits arguments as ssh's `argv_split`: whitespace separates, `"` and `'`
/// quote, a backslash escapes a quote, a backslash or a space, and a `#`
/// starting a word begins a comment.
pub(super) fn split_args(s: &str) -> Result<Vec<String>, &'static str> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return Ok(args),
            Some(_) => {}
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            if quote.is_none() && c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            match (c, quote) {
                ('\\', _) if matches!(chars.peek(), Some('"' | '\'' | '\\' | ' ')) => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, _) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote");
        }
        args.push(word);
    }
}

pub(super) fn parse_directive(
    keyword: &str,
    args: &[String],
    origin: &Origin,
    ignore_unknown: &[String],
) -> Result<Directive, ConfigFileError> {
    let lower = keyword.to_ascii_lowercase();
    match lower.as_str() {
        "host" => {
            if args.is_empty() {
                return Err(bad_value(origin, "Host", "missing pattern"));
            }
            let patterns = args
                .iter()
                .map(|a| match a.strip_prefix('!') {
                    Some(p) => (true, p.to_ascii_lowercase()),
                    None => (false, a.to_ascii_lowercase()),
                })
                .collect();
            return Ok(Directive::Host(HostLine(patterns)));
        }
        "match" => return Err(unsupported(origin.clone(), "Match", " (use Host blocks)")),
        "include" => {
            if args.is_empty() {
                return Err(bad_value(origin, "Include", "missing file name"));
            }
            return Ok(Directive::Include(args.to_vec()));
        }
        "ignoreunknown" => {
            let [list] = args else {
                return Err(bad_value(origin, "IgnoreUnknown", arg_count_reason(args)));
            };
            let patterns = list.split(',').map(|p| p.to_ascii_lowercase()).collect();
            return Ok(Directive::IgnoreUnknown(patterns));
        }
        _ => {}
    }
    if let Some(key) = Key::lookup(keyword) {
        let [arg] = args else {
            return Err(bad_value(origin, key.name(), arg_count_reason(args)));
        };
        let value =
            parse_value(key, arg).map_err(|reason| bad_value(origin, key.name(), reason))?;
        return Ok(Directive::Item(Item::Setting { key, value }));
    }
    let ignorable = SSH_KEYWORDS.contains(&lower.as_str())
        || ignore_unknown
            .iter()
            .any(|p| glob_match(p.as_bytes(), lower.as_bytes()));
    if !ignorable {
        return Err(ConfigFileError::BadOption {
            origin: origin.clone(),
            keyword: keyword.to_owned(),
        });
    }
    Ok(Directive::Item(Item::Ignored(Ignored {
        keyword: keyword.to_owned(),
        value: args.join(" "),
        origin: origin.clone(),
    })))
}

pub(super) fn arg_count_reason(args: &[String]) -> &'static str {
    if args.is_empty() {
        "missing argument"
    } else {
        "garbage at end of line (quote an argument that has spaces)"
    }
}

pub(super) fn bad_value(
    origin: &Origin,
    keyword: &'static str,
    reason: impl Into<String>,
) -> ConfigFileError {
    ConfigFileError::BadValue {
        origin: origin.clone(),
        keyword,
        reason: reason.into(),
    }
}

pub(super) fn parse_value(key: Key, arg: &str) -> Result<Value, String> {
    Ok(match key {
        Key::HostName => {
            if arg.is_empty()
                || arg.starts_with('-')
                || arg.contains(|c: char| c.is_whitespace() || c == '/')
            {
                return Err(format!("{arg:?} is not a host name or address"));
            }
            check_tokens(arg, "h")?;
            Value::Text(arg.to_owned())
        }
        Key::User => {
            if arg.is_empty() {
                return Err("empty user".into());
            }
            Value::Text(arg.to_owned())
        }
        Key::IdentityFile => {
            check_tokens(arg, "dhnpru")?;
            Value::Text(arg.to_owned())
        }
        Key::Port => match arg.parse::<u16>() {
            Ok(port) if port != 0 => Value::Port(port),
            _ => return Err(format!("{arg:?} is not a port (1-65535)")),
        },
        Key::ConnectTimeout | Key::ServerAliveInterval => Value::Duration(parse_time(arg)?),
        Key::ServerAliveCountMax => {
            Value::Count(arg.parse().map_err(|_| format!("{arg:?} is not a count"))?)
        }
        Key::StrictHostKeyChecking => Value::Strict(match arg.to_ascii_lowercase().as_str() {
            "yes" | "true" => StrictHostKeyChecking::Yes,
            "accept-new" | "no" | "off" | "false" => StrictHostKeyChecking::AcceptNew,
            "ask" => StrictHostKeyChecking::Ask,
            _ => return Err(format!("{arg:?}: expected yes, accept-new, ask or no")),
        }),
        Key::BatchMode => Value::Bool(match arg.to_ascii_lowercase().as_str() {
            "yes" | "true" => true,
            "no" | "false" => false,
            _ => return Err(format!("{arg:?}: expected yes or no")),
        }),
    })
}

/// ssh's time format: seconds, or numbers with `s`, `m`, `h`, `d`, `w`
/// suffixes added up (`90`, `1m30s`).
pub(super) fn parse_time(arg: &str) -> Result<Duration, String> {
    let bad = || format!("{arg:?} is not a time (seconds, or like 1m30s)");
    if arg.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = arg;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = match rest.chars().next() {
            None => 1,
            Some(c) => {
                rest = &rest[c.len_utf8()..];
                match c.to_ascii_lowercase() {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    'w' => 604_800,
                    _ => return Err(bad()),
                }
            }
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .filter(|&s| s <= i32::MAX as u64)
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_secs(total))
}
