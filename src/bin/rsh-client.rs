//! `rsh-client`, the rsh client; its command line lives in [`rsh_client::cli`].

fn main() -> std::process::ExitCode {
    rsh_client::cli::main()
}
