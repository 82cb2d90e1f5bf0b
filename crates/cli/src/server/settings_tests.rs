use super::*;
use crate::server::config_file::{self, ConfigSource};
use clap::{CommandFactory, FromArgMatches};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A private config file holding `text`.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(config_file::FILE_NAME);
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The settings `rsh-server ARGS --config FILE` would run with.
fn effective(args: &[&str], file: &Path) -> anyhow::Result<Settings> {
    let mut argv = vec!["rsh-server", "--config"];
    argv.push(file.to_str().expect("UTF-8 temp path"));
    argv.extend_from_slice(args);
    let matches = Settings::command().try_get_matches_from(argv)?;
    let cli = Settings::from_arg_matches(&matches)?;
    ConfigSource::new(cli, matches)?.load()
}

#[test]
fn a_flag_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = config_file(
        dir.path(),
        "max-commands = 3\nlinger = 0.5\nlisten = [\"unix:/tmp/from-file\"]\n",
    );
    let settings =
        effective(&["--max-commands", "7", "-l", "unix:/tmp/flag"], &file).expect("valid settings");
    assert_eq!(settings.max_commands, 7, "the flag wins");
    assert_eq!(
        settings.listen,
        vec![Endpoint::Unix(PathBuf::from("/tmp/flag"))]
    );
    assert_eq!(settings.linger, 0.5, "the file wins over the default");
    assert_eq!(settings.kill_grace, 1.0, "the default where nobody says");

    // A flag given with the default's value still wins over the file.
    let settings = effective(&["--max-commands", "64"], &file).expect("valid");
    assert_eq!(settings.max_commands, 64);
    assert_eq!(
        settings.listen,
        vec![Endpoint::Unix(PathBuf::from("/tmp/from-file"))]
    );
}

#[test]
fn the_file_sets_log_level_and_v_outranks_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = config_file(dir.path(), "log-level = \"warn\"\n");
    assert_eq!(effective(&[], &file).expect("valid").log_filter(), "warn");
    assert_eq!(
        effective(&["-v"], &file).expect("valid").log_filter(),
        "debug"
    );
    assert_eq!(
        effective(&["-vv"], &file).expect("valid").log_filter(),
        "trace"
    );
    let none = dir.path().join("absent.toml");
    assert!(effective(&[], &none).is_err(), "--config names a file");
}

#[test]
fn an_unknown_key_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = config_file(
        dir.path(),
        "shell = \"/bin/sh\"\n# comment\nmax-comands = 3\n",
    );
    let err = effective(&[], &file).expect_err("unknown key");
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!("{}:3: ", file.display())),
        "{text}"
    );
    assert!(text.contains("unknown field `max-comands`"), "{text}");
}

#[test]
fn a_restart_only_setting_is_reported_on_reload() {
    let running = Settings::default();
    let mut reloaded = running.clone();
    assert!(reloaded.restart_only_changes(&running).is_empty());

    reloaded.max_connections = 10;
    reloaded.shell = PathBuf::from("/bin/bash");
    reloaded.log_level = Some("debug".to_owned());
    assert_eq!(
        reloaded.restart_only_changes(&running),
        vec!["max-connections".to_owned(), "log-level".to_owned()],
        "shell applies to new connections; the other two need a restart"
    );
}

/// The rules as they were before the settings were declared in one place
/// (settings added since are not listed: adding one costs no edit here).
#[test]
fn reload_rules_are_as_before() {
    use Reload::{NewConnections, Restart};
    let rules = [
        ("listen", Restart),
        ("max-startups", Restart),
        ("max-silent", Restart),
        ("max-queued", Restart),
        ("max-connections", Restart),
        ("ready-file", Restart),
        ("stdin-budget", Restart),
        ("log-format", Restart),
        ("log-level", Restart),
        ("handshake-timeout", NewConnections),
        ("keepalive", NewConnections),
        ("frame-timeout", NewConnections),
        ("shell", NewConnections),
        ("max-commands", NewConnections),
        ("shutdown-grace", NewConnections),
        ("kill-grace", NewConnections),
        ("linger", NewConnections),
    ];
    for (key, wanted) in rules {
        let declared = Settings::FIELDS
            .iter()
            .find(|(field, _)| file_key(field) == key)
            .map(|(_, rule)| *rule);
        assert_eq!(declared, Some(wanted), "{key}");
    }
}

/// Each declared setting is a file key, and each command-line-only field is
/// not (the `#[serde(skip)]` the declaration asks for is there).
#[test]
fn file_keys_follow_the_reload_rules() {
    let path = Path::new("rsh-server.toml");
    for (field, rule) in Settings::FIELDS {
        let key = file_key(field);
        // Any value: an unknown key is refused before its value is read.
        let err = config_file::parse(&format!("{key} = []\n"), path)
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        let unknown = err.contains("unknown field");
        assert_eq!(
            unknown,
            *rule == Reload::CommandLine,
            "{key} ({rule:?}): {err}"
        );
    }
}

#[test]
fn check_config_lines_are_the_files_syntax() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = config_file(
        dir.path(),
        "listen = [\"unix:/tmp/s\", \"127.0.0.1:7022\"]\nshutdown-grace = 30\nready-file = \"/tmp/r\"\n",
    );
    let settings = effective(&["--linger", "0.5"], &file).expect("valid");
    let lines = settings.toml_lines();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("listen = [\"unix:/tmp/s\", \"127.0.0.1:7022\"]")
    );
    for line in [
        "shutdown-grace = 30",
        "linger = 0.5",
        "ready-file = \"/tmp/r\"",
        "log-format = \"text\"",
        "stdin-budget = 67108864",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line} in {lines:?}");
    }
    // Read back, the lines give the same settings.
    let again = config_file::parse(&lines.join("\n"), Path::new("x")).expect("valid");
    assert_eq!(again.toml_lines(), lines);
    assert!(
        !lines.iter().any(|l| l.starts_with("verbose")),
        "command-line-only fields have no line"
    );
}

#[test]
fn seconds_are_checked() {
    let mut settings = Settings {
        kill_grace: -1.0,
        ..Settings::default()
    };
    assert!(settings.server_config().is_err());
    settings.kill_grace = 0.0;
    settings.frame_timeout = 0.0;
    let err = settings.server_config().expect_err("zero frame timeout");
    assert!(err.to_string().contains("--frame-timeout"), "{err}");
    settings.frame_timeout = 1.0;
    settings.keepalive = 0.0;
    assert_eq!(settings.server_config().expect("valid").keepalive, None);
}

/// sshd's ClientAlive settings: off by default (interval 0), applied to new
/// connections on reload, and a file's values reach the server's config.
#[test]
fn client_alive_is_off_by_default_and_reloads_for_new_connections() {
    let config = Settings::default().server_config().expect("valid");
    assert_eq!(config.client_alive_interval, None);
    assert_eq!(config.client_alive_count_max, 3);
    for key in ["client-alive-interval", "client-alive-count-max"] {
        let declared = Settings::FIELDS
            .iter()
            .find(|(field, _)| file_key(field) == key)
            .map(|(_, rule)| *rule);
        assert_eq!(declared, Some(Reload::NewConnections), "{key}");
    }
    let settings = config_file::parse(
        "client-alive-interval = 1.5\nclient-alive-count-max = 2\n",
        Path::new("x"),
    )
    .expect("valid");
    let config = settings.server_config().expect("valid");
    assert_eq!(
        config.client_alive_interval,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(config.client_alive_count_max, 2);
    let negative = Settings {
        client_alive_interval: -1.0,
        ..Settings::default()
    };
    let err = negative.server_config().expect_err("negative interval");
    assert!(err.to_string().contains("--client-alive-interval"), "{err}");
}
