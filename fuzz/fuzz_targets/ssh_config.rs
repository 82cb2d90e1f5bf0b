//! The ssh_config parser (`rsh_config::ClientConfig`), fed any text.
//!
//! Properties: parsing never panics and is deterministic (the same text
//! gives the same outcome and the same resolution for every host); a parsed
//! config resolves any host without panicking; the first value obtained
//! wins, as in ssh (a `Host *` block appended to a config changes only what
//! the config left unset); and a command-line override beats the file.
//! Texts that mention `Include` are skipped: they would read this machine's
//! files.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rsh_config::{ClientConfig, Overrides};

fn parse(text: &str) -> Option<ClientConfig> {
    let base = Path::new("/nonexistent/rsh-fuzz");
    ClientConfig::parse_with_base(text, Path::new("fuzz_config"), base)
        .ok()
        .map(|config| config.with_local(Some("/home/fuzz".into()), Some("fuzz".into())))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.to_ascii_lowercase().contains("include") {
        return;
    }
    let first = parse(text);
    let second = parse(text);
    assert_eq!(first.is_some(), second.is_some(), "parsing is deterministic");
    let (Some(config), Some(same)) = (first, second) else {
        return;
    };
    // Hosts to resolve: a few fixed ones and words of the text.
    let mut aliases = vec!["host".to_string(), "web01".to_string(), String::new()];
    aliases.extend(text.split_whitespace().take(8).map(str::to_string));

    let appended = format!("{text}\nHost *\nPort 7\nUser appended\n");
    let later = parse(&appended).expect("a Host * block appended to a valid config parses");
    let none = Overrides::new();
    let mut port_given = Overrides::new();
    port_given.port(2);
    for alias in &aliases {
        let resolved = config.resolve(alias, &none);
        assert_eq!(resolved, same.resolve(alias, &none), "resolving is deterministic");
        let mut text = Vec::new();
        resolved.print_like_ssh_g(&mut text).expect("print");

        let with_later = later.resolve(alias, &none);
        assert_eq!(with_later.port, resolved.port.or(Some(7)), "first value wins");
        assert_eq!(
            with_later.user,
            resolved.user.clone().or(Some("appended".into())),
            "first value wins"
        );
        assert_eq!(config.resolve(alias, &port_given).port, Some(2));
    }
});
