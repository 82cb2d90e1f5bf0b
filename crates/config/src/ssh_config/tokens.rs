//! `%` tokens: their expansion at resolution, their check at parse time.

/// Replaces `%%` by `%` and `%c` by `lookup(c)`; a token with no value is
/// left as written (validation at parse time refuses unknown tokens).
pub(super) fn expand_tokens(s: &str, lookup: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match lookup(t) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push('%');
                    out.push(t);
                }
            },
            None => out.push('%'),
        }
    }
    out
}

/// Checks that `s` uses only the `%` tokens in `allowed` (and `%%`).
pub(super) fn check_tokens(s: &str, allowed: &str) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => {}
                Some(t) if allowed.contains(t) => {}
                Some(t) => return Err(format!("unknown token %{t}")),
                None => return Err("'%' at the end (write %% for a %)".into()),
            }
        }
    }
    Ok(())
}
