//! `Host` patterns, and the file name globs of `Include`.

use std::path::{Path, PathBuf};

/// One `Host` line: (negated, lowercase pattern) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostLine(pub(super) Vec<(bool, String)>);

impl HostLine {
    pub(super) fn matches(&self, alias_lower: &str) -> bool {
        let mut positive = false;
        for (negated, pattern) in &self.0 {
            if glob_match(pattern.as_bytes(), alias_lower.as_bytes()) {
                if *negated {
                    return false;
                }
                positive = true;
            }
        }
        positive
    }
}

/// `*` matches any run (also empty), `?` any one byte; all else literally.
/// Iterative with one backtrack point, so it is linear-ish and cannot blow up.
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Expands a file name pattern (`*` and `?` in any component, no match for a
/// leading `.` unless written) into the existing paths, sorted as glob(3)
/// sorts them. A name without wildcards is returned if it exists.
pub(super) fn glob_paths(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?']) {
                next.push(dir.join(component));
                continue;
            }
            let listing = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(listing) = listing else { continue };
            let mut names: Vec<String> = listing
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                .filter(|n| glob_match(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}
