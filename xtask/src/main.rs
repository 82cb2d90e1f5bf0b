//! `cargo xtask dist` (or `cargo run -p xtask -- dist`): writes the man pages
//! and shell completions of `rsh-server` and `rsh-client` to
//! `target/dist/{man,completions}`, generated from the same clap `Command`
//! the binaries parse with, so they cannot drift from `--help`. The Debian
//! package (`cargo deb`) installs them from there.
//!
//! [`man`] renders the pages (with a SYNOPSIS that names option values, and
//! the sections of [`pages`]); [`completion`] adds host names to
//! `rsh-client`'s bash and zsh completions.

mod completion;
mod man;
mod pages;

use anyhow::Context;
use clap_complete::{Generator, Shell};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("dist") => dist(&workspace_root().join("target/dist")),
        _ => {
            eprintln!(
                "usage: cargo xtask dist\n\n  dist  man pages and completions into target/dist"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask/ sits directly in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The binaries' command lines, each with the name it is installed under.
fn commands() -> Vec<clap::Command> {
    vec![rsh_cli::server::command(), rsh_cli::client::command()]
}

fn dist(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for command in commands() {
        let name = command.get_name().to_owned();
        let path = man.join(format!("{name}.1"));
        let page = man::render(&command, pages::sections(&name))
            .with_context(|| format!("rendering the man page of {name}"))?;
        write(&path, &page)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let path = completions.join(shell.file_name(&name));
            write(&path, &completion::generate(shell, &command))?;
        }
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long option of both binaries is in its man page and its bash
    /// completion: generated, so nothing can be forgotten.
    #[test]
    fn man_pages_and_completions_cover_every_option() {
        let out = std::env::temp_dir().join(format!("rsh-xtask-test-{}", std::process::id()));
        dist(&out).expect("dist");
        for command in commands() {
            let name = command.get_name().to_owned();
            let page = std::fs::read_to_string(out.join("man").join(format!("{name}.1")))
                .expect("man page");
            let bash =
                std::fs::read_to_string(out.join("completions").join(format!("{name}.bash")))
                    .expect("bash completion");
            for long in command.get_arguments().filter_map(clap::Arg::get_long) {
                // roff escapes hyphens.
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&roff), "{name}.1 lacks --{long}");
                assert!(
                    bash.contains(&format!("--{long}")),
                    "{name}.bash lacks --{long}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
