//! `cargo xtask dist` (or `cargo run -p xtask -- dist`): writes the man pages
//! and shell completions of `rsh-server` and `rsh-client` to
//! `target/dist/{man,completions}`, generated from the same clap `Command`
//! the binaries parse with, so they cannot drift from `--help`. The Debian
//! package (`cargo deb`) installs them from there.

use anyhow::Context;
use clap_complete::Shell;
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
    vec![rsh_server::cli::command(), rsh_client::cli::command()]
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
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .render(&mut page)
            .with_context(|| format!("rendering the man page of {name}"))?;
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut command = command.clone();
            let path = clap_complete::generate_to(shell, &mut command, &name, &completions)
                .with_context(|| format!("writing {shell} completions of {name}"))?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
