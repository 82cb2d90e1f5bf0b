use super::matching::glob_match;
use super::parse::{parse_time, split_args};
use super::*;
use std::os::unix::fs::PermissionsExt;

fn parse(text: &str) -> ClientConfig {
    ClientConfig::parse_with_base(text, Path::new("config"), Path::new("/nonexistent"))
        .expect("valid config")
        .with_local(Some("/home/al".into()), Some("al".into()))
}

fn parse_err(text: &str) -> String {
    ClientConfig::parse_with_base(text, Path::new("config"), Path::new("/nonexistent"))
        .expect_err("must be refused")
        .to_string()
}

fn resolve(text: &str, alias: &str) -> Resolved {
    parse(text).resolve(alias, &Overrides::new())
}

/// Writes a file with mode 0600 whatever the umask.
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn glob_patterns() {
    for (pattern, text, expected) in [
        ("*", "", true),
        ("*", "anything", true),
        ("web?", "web1", true),
        ("web?", "web12", false),
        ("*.example.org", "a.example.org", true),
        ("*.example.org", "example.org", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        ("**x", "abx", true),
    ] {
        assert_eq!(
            glob_match(pattern.as_bytes(), text.as_bytes()),
            expected,
            "{pattern} vs {text}"
        );
    }
}

#[test]
fn host_blocks_with_globs_and_case() {
    let text = "Host web?\n  HostName web.internal\nHost *.lab DB\n  Port 2222\n";
    assert_eq!(resolve(text, "web1").hostname, "web.internal");
    assert_eq!(resolve(text, "web10").hostname, "web10");
    assert_eq!(resolve(text, "x.lab").port, Some(2222));
    assert_eq!(resolve(text, "db").port, Some(2222), "patterns ignore case");
    assert_eq!(
        resolve(text, "WEB1").hostname,
        "web.internal",
        "aliases too"
    );
    assert_eq!(resolve(text, "other").port, None);
}

#[test]
fn negation_excludes_and_never_matches_alone() {
    let text = "Host *.lab !bad.lab\n  User labuser\nHost !nothing\n  Port 9\n";
    assert_eq!(resolve(text, "good.lab").user.as_deref(), Some("labuser"));
    assert_eq!(resolve(text, "bad.lab").user, None);
    // A line of negations only has no positive match, as in ssh.
    assert_eq!(resolve(text, "elsewhere").port, None);
    // Negation wins whatever the order of the patterns.
    let text = "Host !bad.lab *.lab\n  User labuser\n";
    assert_eq!(resolve(text, "bad.lab").user, None);
}

#[test]
fn first_obtained_value_wins() {
    let text = "\
Port 1000
Host special
  Port 2000
  User first
Host *
  User second
  HostName fallback
";
    let r = resolve(text, "special");
    assert_eq!(r.port, Some(1000), "global lines before Host come first");
    assert_eq!(r.user.as_deref(), Some("first"));
    assert_eq!(r.hostname, "fallback");
    let text = "Host special\n  User a\n  User b\n";
    assert_eq!(resolve(text, "special").user.as_deref(), Some("a"));
}

#[test]
fn equals_sign_quotes_comments_and_case() {
    let text = "\
# a comment
   # indented comment

host=q
  port=22
  USER = \"with space\"
  hostname   =quoted.example  # trailing comment
  IdentityFile '/keys/my key'
  ConnectTimeout\t1m30s
";
    let r = resolve(text, "q");
    assert_eq!(r.port, Some(22));
    assert_eq!(r.user.as_deref(), Some("with space"));
    assert_eq!(r.hostname, "quoted.example");
    assert_eq!(r.identity_file, Some(PathBuf::from("/keys/my key")));
    assert_eq!(r.connect_timeout, Some(Duration::from_secs(90)));
}

#[test]
fn split_args_like_ssh() {
    assert_eq!(
        split_args(r#"a "b c" 'd "e"' f\ g h\"i"#).expect("ok"),
        vec!["a", "b c", "d \"e\"", "f g", "h\"i"]
    );
    assert_eq!(split_args("a #b").expect("ok"), vec!["a"]);
    assert_eq!(split_args("a#b").expect("ok"), vec!["a#b"]);
    assert_eq!(split_args("\"\"").expect("ok"), vec![""]);
    assert!(split_args("\"open").is_err());
}

#[test]
fn hostname_token_and_identity_expansion() {
    let text = "\
Host *.short
  HostName %h.example.org
  IdentityFile ~/.rsh/id_%h_%r_%%
Host p
  HostName 100%%.example
";
    let r = resolve(text, "db.short");
    assert_eq!(r.hostname, "db.short.example.org");
    assert_eq!(
        r.identity_file,
        Some(PathBuf::from("/home/al/.rsh/id_db.short.example.org_al_%"))
    );
    assert_eq!(resolve(text, "p").hostname, "100%.example");
    let err = parse_err("HostName %p.example\n");
    assert!(err.contains("config:1") && err.contains("%p"), "{err}");
}

#[test]
fn typed_values() {
    let text = "\
ServerAliveInterval 15
ServerAliveCountMax 5
StrictHostKeyChecking accept-new
BatchMode yes
ConnectTimeout 7
";
    let r = resolve(text, "any");
    assert_eq!(r.server_alive_interval, Some(Duration::from_secs(15)));
    assert_eq!(r.server_alive_count_max, Some(5));
    assert_eq!(
        r.strict_host_key_checking,
        Some(StrictHostKeyChecking::AcceptNew)
    );
    assert_eq!(r.batch_mode, Some(true));
    assert_eq!(r.connect_timeout, Some(Duration::from_secs(7)));
}

#[test]
fn strict_host_key_checking_no_never_trusts_changed_keys() {
    for word in ["no", "off", "false", "NO"] {
        let r = resolve(&format!("StrictHostKeyChecking {word}\n"), "h");
        assert_eq!(
            r.strict_host_key_checking,
            Some(StrictHostKeyChecking::AcceptNew),
            "{word}"
        );
    }
    for (word, expected) in [
        ("yes", StrictHostKeyChecking::Yes),
        ("ask", StrictHostKeyChecking::Ask),
    ] {
        let r = resolve(&format!("StrictHostKeyChecking {word}\n"), "h");
        assert_eq!(r.strict_host_key_checking, Some(expected));
    }
}

#[test]
fn ssh_options_are_ignored_and_reported() {
    let text = "\
Host a
  SendEnv LANG LC_*
  ControlMaster auto
Host b
  ForwardX11 yes
";
    let r = resolve(text, "a");
    let keys: Vec<_> = r.ignored.iter().map(|i| i.keyword.as_str()).collect();
    assert_eq!(
        keys,
        ["SendEnv", "ControlMaster"],
        "only the matching block"
    );
    assert_eq!(r.ignored[0].value, "LANG LC_*");
    assert_eq!(
        r.ignored[0].origin,
        Origin::File {
            path: "config".into(),
            line: 2
        }
    );
}

#[test]
fn unknown_keyword_is_an_error_with_file_and_line() {
    let err = parse_err("Host x\n  Port 22\n  Prot 22\n");
    assert_eq!(err, "config:3: Bad configuration option: Prot");
    // Even in a block that matches nothing, as ssh.
    let err = parse_err("Host never\n  Bogus yes\n");
    assert_eq!(err, "config:2: Bad configuration option: Bogus");
}

#[test]
fn ignore_unknown_applies_to_later_lines() {
    let r = resolve("IgnoreUnknown Foo*,bar\nFooBar 1\nBAR 2\n", "h");
    assert_eq!(r.ignored.len(), 2);
    let err = parse_err("FooBar 1\nIgnoreUnknown Foo*\n");
    assert!(err.starts_with("config:1:"), "{err}");
}

#[test]
fn malformed_lines_name_file_and_line() {
    for (text, expect) in [
        ("Port\n", "config:1: Port: missing argument"),
        ("\n\nPort 22 23\n", "config:3: Port: garbage at end of line"),
        ("Port 0\n", "config:1: Port: \"0\" is not a port"),
        ("Port http\n", "config:1: Port"),
        ("User \"open\n", "config:1: unterminated quote"),
        ("=22\n", "config:1: missing keyword"),
        ("Host\n", "config:1: Host: missing pattern"),
        ("ConnectTimeout 5x\n", "config:1: ConnectTimeout"),
        ("ServerAliveCountMax -1\n", "config:1: ServerAliveCountMax"),
        ("BatchMode maybe\n", "config:1: BatchMode"),
        (
            "StrictHostKeyChecking sure\n",
            "config:1: StrictHostKeyChecking",
        ),
        ("Match host x\n", "config:1: Match is not supported by rsh"),
        ("HostName a/b\n", "config:1: HostName"),
        ("HostName -oProxyCommand=x\n", "config:1: HostName"),
    ] {
        let err = parse_err(text);
        assert!(err.starts_with(expect), "{text:?}: {err}");
    }
}

#[test]
fn time_format() {
    assert_eq!(parse_time("0"), Ok(Duration::ZERO));
    assert_eq!(parse_time("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_time("1h2M3s"), Ok(Duration::from_secs(3723)));
    assert_eq!(parse_time("1w"), Ok(Duration::from_secs(604_800)));
    for bad in ["", "m", "1x", "-1", "99999999999999999999", "1 m"] {
        assert!(parse_time(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn overrides_come_first_and_first_wins_among_them() {
    let config = parse("Host h\n  Port 1\n  User fileuser\n  HostName real\n");
    let mut o = Overrides::new();
    o.option("Port=2")
        .expect("ok")
        .option("Port 3")
        .expect("ok")
        .option("sendenv=GIT_PROTOCOL")
        .expect("ignored, accepted");
    o.user("cli");
    let r = config.resolve("h", &o);
    assert_eq!(r.port, Some(2));
    assert_eq!(r.user.as_deref(), Some("cli"));
    assert_eq!(r.hostname, "real", "keys not overridden come from the file");
    assert_eq!(r.ignored.len(), 1);
    assert_eq!(r.ignored[0].origin, Origin::CommandLine);
    let mut o = Overrides::new();
    o.port(5).option("Port=6").expect("ok");
    assert_eq!(config.resolve("h", &o).port, Some(5));
}

#[test]
fn bad_overrides_are_refused() {
    for (opt, expect) in [
        ("Bogus=1", "command line: Bad configuration option: Bogus"),
        ("Port=x", "command line: Port"),
        ("Host=x", "command line: Host is not supported by rsh in -o"),
        ("Include=x", "command line: Include is not supported"),
        ("", "command line: empty option"),
    ] {
        let err = Overrides::new()
            .option(opt)
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with(expect), "{opt:?}: {err}");
    }
}

#[test]
fn include_with_globs_relative_to_the_config_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("config.d")).expect("mkdir");
    write(&dir.join("config.d/b.conf"), "Host b\n  Port 2\n");
    write(
        &dir.join("config.d/a.conf"),
        "Host a b\n  Port 1\n  User fromA\n",
    );
    write(&dir.join("config.d/.hidden"), "Host b\n  User hidden\n");
    write(
        &dir.join("config"),
        "Include config.d/*.conf missing.conf\nHost b\n  User main\n",
    );
    let config = ClientConfig::load(dir.join("config")).expect("load");
    let r = config.resolve("b", &Overrides::new());
    // a.conf before b.conf (sorted), both before the main file's later lines.
    assert_eq!(r.port, Some(1));
    assert_eq!(r.user.as_deref(), Some("fromA"));
    assert_eq!(config.resolve("a", &Overrides::new()).port, Some(1));
}

#[test]
fn include_inside_a_host_block_applies_only_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(&dir.join("inc"), "User included\nHost *\n  Port 7\n");
    write(
        &dir.join("config"),
        "Host only\n  Include inc\nHost *\n  Port 9\n",
    );
    let config = ClientConfig::load(dir.join("config")).expect("load");
    let r = config.resolve("only", &Overrides::new());
    assert_eq!((r.user.as_deref(), r.port), (Some("included"), Some(7)));
    let r = config.resolve("other", &Overrides::new());
    assert_eq!((r.user, r.port), (None, Some(9)));
}

#[test]
fn include_errors_name_the_included_file_and_depth_is_limited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(&dir.join("inc"), "\nBogus 1\n");
    write(&dir.join("config"), "Include inc\n");
    let err = ClientConfig::load(dir.join("config"))
        .expect_err("refused")
        .to_string();
    assert!(
        err.ends_with("inc:2: Bad configuration option: Bogus"),
        "{err}"
    );

    write(&dir.join("loop"), "Include loop\n");
    let err = ClientConfig::load(dir.join("loop"))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("Include nested deeper than 16"), "{err}");
}

#[test]
fn missing_and_loose_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("config");
    assert!(matches!(
        ClientConfig::load(&path),
        Err(ConfigFileError::Io { .. })
    ));
    let empty = ClientConfig::load_if_exists(&path).expect("missing is empty");
    assert_eq!(empty.resolve("h", &Overrides::new()).hostname, "h");
    write(&path, "Port 1\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert!(matches!(
        ClientConfig::load_if_exists(&path),
        Err(ConfigFileError::Permissions { .. })
    ));
}

#[test]
fn print_like_ssh_g() {
    let text = "\
Host alias
  HostName 10.0.0.5
  Port 2222
  User bob
  IdentityFile ~/id
  ServerAliveInterval 10
  StrictHostKeyChecking yes
";
    let mut out = Vec::new();
    resolve(text, "alias")
        .print_like_ssh_g(&mut out)
        .expect("write");
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "\
host alias
hostname 10.0.0.5
user bob
port 2222
identityfile /home/al/id
connecttimeout none
serveraliveinterval 10
serveralivecountmax 3
stricthostkeychecking true
batchmode no
"
    );
    let mut out = Vec::new();
    resolve("", "plain")
        .print_like_ssh_g(&mut out)
        .expect("write");
    let out = String::from_utf8(out).expect("utf8");
    assert!(
        out.starts_with("host plain\nhostname plain\nport 7022\n"),
        "{out}"
    );
}

#[test]
fn include_relative_to_rsh_home_for_another_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let other = tmp.path().join("other");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::create_dir(&other).expect("mkdir");
    write(&home.join("common"), "Port 11\n");
    write(&other.join("common"), "Port 22\n");
    write(&other.join("cfg"), "Include common\n");
    let config = ClientConfig::load_relative_to(&other.join("cfg"), &home).expect("load");
    assert_eq!(config.resolve("h", &Overrides::new()).port, Some(11));
    let config = ClientConfig::load(other.join("cfg")).expect("load");
    assert_eq!(config.resolve("h", &Overrides::new()).port, Some(22));
}

/// ssh's `secure_permissions`: an `Include`d file must be as safe as the
/// main one, owned by the user (or root) and not writable by group or
/// others. Giving a file to another user needs root; without it only the
/// mode half is checked.
#[test]
fn included_files_need_the_main_files_permissions() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let main = tmp.path().join("config");
    let included = tmp.path().join("included");
    write(&main, "Include included\n");
    write(&included, "Port 1\n");
    let port = |config: ClientConfig| config.resolve("h", &Overrides::new()).port;
    assert_eq!(port(ClientConfig::load(&main).expect("safe")), Some(1));

    std::fs::set_permissions(&included, std::fs::Permissions::from_mode(0o620)).expect("chmod");
    let err = ClientConfig::load(&main).expect_err("group-writable include");
    assert!(
        matches!(&err, ConfigFileError::Permissions { path } if path == &included),
        "{err}"
    );
    std::fs::set_permissions(&included, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let owner = std::fs::metadata(&main).expect("stat").uid();
    if owner != 0 {
        eprintln!("skipped: a foreign owner needs root to chown");
        return;
    }
    // Another user's file, though not writable by anyone else: refused.
    std::os::unix::fs::lchown(&included, Some(65534), None).expect("chown");
    let err = ClientConfig::load(&main).expect_err("foreign include");
    assert!(
        matches!(&err, ConfigFileError::BadOwner { path, owner: 65534 } if path == &included),
        "{err}"
    );
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    // And so is the main file itself.
    std::os::unix::fs::lchown(&main, Some(65534), None).expect("chown");
    assert!(matches!(
        ClientConfig::load(&main),
        Err(ConfigFileError::BadOwner { .. })
    ));
}
