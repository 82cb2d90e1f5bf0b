//! `rsh-server`, the rsh daemon; its command line lives in [`rsh_cli::server`].

fn main() -> std::process::ExitCode {
    rsh_cli::server::main()
}
