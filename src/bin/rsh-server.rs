//! `rsh-server`, the rsh daemon; its command line lives in [`rsh_server::cli`].

fn main() -> std::process::ExitCode {
    rsh_server::cli::main()
}
