//! `rsh-client`, the rsh client; its command line lives in [`rsh_cli::client`].

fn main() -> std::process::ExitCode {
    rsh_cli::client::main()
}
