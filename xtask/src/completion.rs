//! Shell completions: clap_complete's, plus host names for `rsh-client`
//! where a host goes (DEST, `-H`, `--exclude`, `--forget-host`), as ssh's
//! completion offers them. The names come from `$RSH_HOME/known_hosts`, the
//! `Host` lines of `$RSH_HOME/config` and `~/.ssh/config` (without
//! wildcards), and `~/.ssh/known_hosts` (unhashed names), read when Tab is
//! pressed.

use clap::{Arg, Command, ValueHint};
use clap_complete::Shell;

/// The arguments of `rsh-client` whose value is a host (or a hostlist).
const HOST_ARGS: &[&str] = &["dest", "hosts", "exclude", "forget_host"];

/// The completion script of `command` for `shell`.
pub fn generate(shell: Shell, command: &Command) -> Vec<u8> {
    let name = command.get_name().to_owned();
    let hosts = name == "rsh-client";
    let mut command = command.clone();
    if hosts {
        // Options only: mut_arg moves a positional behind the trailing
        // COMMAND words, which clap refuses; DEST is handled per shell.
        for id in HOST_ARGS.iter().filter(|id| **id != "dest") {
            if command.get_arguments().any(|a| a.get_id() == *id) {
                command = command.mut_arg(*id, |a| a.value_hint(ValueHint::Hostname));
            }
        }
    }
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    if !hosts {
        return script;
    }
    let script = String::from_utf8_lossy(&script).into_owned();
    match shell {
        Shell::Bash => bash(script, &command),
        // zsh's `_hosts` knows ssh's files, not rsh's: ours first, then its.
        Shell::Zsh => {
            let script = script
                .lines()
                .map(|line| {
                    if line.starts_with("'::dest -- ") {
                        line.replace(":_default' \\", ":_rsh_client_hosts' \\")
                    } else {
                        line.replace(":_hosts' \\", ":_rsh_client_hosts' \\")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
            let tail = "if [ \"$funcstack[1]\" = \"_rsh-client\" ]; then";
            let functions = format!("{HOST_NAMES}{ZSH_HOSTS}\n");
            match script.find(tail) {
                Some(at) => format!("{}{functions}{}", &script[..at], &script[at..]),
                None => script + &functions,
            }
            .into_bytes()
        }
        _ => script.into_bytes(),
    }
}

/// Lists the host names, one a line, sorted and unique; shared by bash and
/// zsh. `host:port` entries lose their port (a DEST takes the host alone when
/// the port is the default, and `:` splits words in bash); IPv6 addresses
/// are left out for the same reason.
const HOST_NAMES: &str = r#"
_rsh_client_host_names() {
    local rsh_home="${RSH_HOME:-$HOME/.rsh}" file
    {
        if [ -r "$rsh_home/known_hosts" ]; then
            awk '$1 !~ /^#/ && $1 != "" { h = $1; sub(/:[0-9]+$/, "", h); print h }' "$rsh_home/known_hosts"
        fi
        for file in "$rsh_home/config" "$HOME/.ssh/config"; do
            [ -r "$file" ] || continue
            awk '{
                line = $0; sub(/^[ \t]+/, "", line)
                if (tolower(substr(line, 1, 4)) != "host") next
                rest = substr(line, 5)
                if (rest !~ /^[ \t=]/) next
                gsub(/[="]/, " ", rest)
                n = split(rest, word, /[ \t]+/)
                for (i = 1; i <= n; i++) if (word[i] != "" && word[i] !~ /[*?!]/) print word[i]
            }' "$file"
        done
        if [ -r "$HOME/.ssh/known_hosts" ]; then
            awk '$1 !~ /^#/ && $1 != "" {
                field = ($1 ~ /^@/) ? $2 : $1
                if (field ~ /^\|/) next
                n = split(field, name, ",")
                for (i = 1; i <= n; i++) { h = name[i]; sub(/^\[/, "", h); sub(/\]:[0-9]+$/, "", h); if (h !~ /[*?!]/) print h }
            }' "$HOME/.ssh/known_hosts"
        fi
    } 2>/dev/null | awk '$0 !~ /:/' | sort -u
}
"#;

const ZSH_HOSTS: &str = r#"
_rsh_client_hosts() {
    local -a hosts expl
    hosts=( ${(f)"$(_rsh_client_host_names)"} )
    compset -P '*,'
    compset -P '*@'
    _wanted hosts expl host compadd -a hosts
}
"#;

/// clap_complete's bash function, wrapped: where a host goes, the host
/// names replace what it offered (at position 1 it offers only options).
fn bash(script: String, command: &Command) -> Vec<u8> {
    let takes_value =
        |a: &&Arg| !a.is_positional() && a.get_num_args().is_some_and(|n| n.takes_values());
    let mut value_options = Vec::new();
    for arg in command.get_arguments().filter(takes_value) {
        if HOST_ARGS.contains(&arg.get_id().as_str()) {
            continue;
        }
        value_options.extend(arg.get_short().map(|s| format!("-{s}")));
        value_options.extend(arg.get_long().map(|l| format!("--{l}")));
    }
    let value_options = value_options.join("|");
    let (head, register) = match script.find("if [[ \"${BASH_VERSINFO[0]}\" -eq 4") {
        Some(at) => script.split_at(at),
        None => (script.as_str(), ""),
    };
    let wrapper = BASH_HOSTS.replace("VALUE_OPTIONS", &value_options);
    let register = register.replace("-F _rsh__client ", "-F _rsh_client_complete ");
    format!("{head}{HOST_NAMES}{wrapper}\n{register}").into_bytes()
}

const BASH_HOSTS: &str = r#"
_rsh_client_complete() {
    _rsh__client "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" word i skip=0 prefix=""
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    [[ $cur == -* ]] && return 0
    case "$prev" in
        -H|--hosts|--exclude)
            [[ $cur == *,* ]] && prefix="${cur%,*},"
            ;;
        --forget-host)
            ;;
        VALUE_OPTIONS)
            return 0
            ;;
        *)
            # DEST is the first word that is neither an option nor an
            # option's value; with -H or --hosts-file there is none.
            for (( i = 1; i < COMP_CWORD; i++ )); do
                word="${COMP_WORDS[i]}"
                if (( skip )); then skip=0; continue; fi
                case "$word" in
                    -H*|--hosts|--hosts=*|--hosts-file|--hosts-file=*) return 0 ;;
                    --exclude|--forget-host|VALUE_OPTIONS) skip=1 ;;
                    -*) ;;
                    *) return 0 ;;
                esac
            done
            ;;
    esac
    local rest="${cur#"$prefix"}"
    [[ $rest == *@* ]] && prefix="$prefix${rest%%@*}@"
    COMPREPLY=( $(compgen -P "$prefix" -W "$(_rsh_client_host_names)" -- "${cur#"$prefix"}") )
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command as Process;

    /// Writes `text` to `dir/name`, creating `dir`.
    fn put(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(name), text).expect("write");
    }

    /// What bash's completion offers for `line` (the last word being
    /// completed), with HOME at `home`.
    fn complete(script: &Path, home: &Path, line: &str) -> String {
        let program = r#"
            source "$1"
            read -ra COMP_WORDS <<< "$2"
            [[ $2 == *" " ]] && COMP_WORDS+=("")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            _rsh_client_complete rsh-client "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            echo "${COMPREPLY[*]}"
        "#;
        let output = Process::new("bash")
            .args(["--norc", "--noprofile", "-c", program, "bash"])
            .arg(script)
            .arg(line)
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(home)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Host names come from rsh's known_hosts and config and from ssh's
    /// config and known_hosts, where a host goes and nowhere else.
    #[test]
    fn bash_completes_host_names_where_a_host_goes() {
        let home = std::env::temp_dir().join(format!("rsh-xtask-hosts-{}", std::process::id()));
        let rsh = home.join(".rsh");
        let ssh = home.join(".ssh");
        put(&rsh, "known_hosts", "# comment\nweb1.example:7022 SHA256:abc\nweb2.example:7023 SHA256:def\n[::1]:7022 SHA256:ghi\n");
        put(
            &rsh,
            "config",
            "Host webalias *.wild !neg\n  HostName elsewhere\nHost=west\n",
        );
        put(&ssh, "config", "Host sshonly\n");
        put(
            &ssh,
            "known_hosts",
            "wedge.example,10.0.0.1 ssh-ed25519 AAAA\n|1|hashed ssh-rsa AAAA\n",
        );
        let script = home.join("rsh-client.bash");
        std::fs::write(&script, generate(Shell::Bash, &rsh_cli::client::command())).expect("write");
        let all = "web1.example web2.example webalias wedge.example west";
        for (line, expected) in [
            ("rsh-client we", all),
            ("rsh-client -p 7022 -v we", all),
            ("rsh-client al@web", "al@web1.example al@web2.example al@webalias"),
            ("rsh-client -H web1.example,ws", ""),
            ("rsh-client -H web1.example,we", "web1.example,web1.example web1.example,web2.example web1.example,webalias web1.example,wedge.example web1.example,west"),
            ("rsh-client --exclude ss", "sshonly"),
            ("rsh-client --forget-host web2", "web2.example"),
            ("rsh-client web1.example we", ""),
            ("rsh-client -H web1.example we", ""),
            ("rsh-client -l we", ""),
        ] {
            assert_eq!(complete(&script, &home, line), expected, "{line}");
        }
        let _ = std::fs::remove_dir_all(&home);
    }
}
