//! A terminal session on a remote pty (`rsh-client HOST`, `-t`): our
//! terminal in raw mode while it lasts, keys and output byte for byte,
//! SIGWINCH sent as a resize, the escapes (`~.`, `~^Z`, `~?`).

use super::exit::{exit_code, fail, killed_by_signal, Failure, EXIT_RSH_FAILURE};
use super::stdio::raw_local_reader;
use rsh_client::{Client, ClientError, ExecRequest};
use std::io::IsTerminal;
use std::process::ExitCode;

/// A session on a remote pty: our terminal in raw mode (when stdin is one),
/// keys and output byte for byte, SIGWINCH sent as a resize, escapes.
pub(super) async fn terminal_session(
    client: &Client,
    request: ExecRequest,
    escape: Option<u8>,
    host: &str,
    quiet: bool,
) -> Result<ExitCode, Failure> {
    use rsh_client::session::{self, CommandInput, Local, LocalSignals, NoTerminal, SessionEnd};
    let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".to_owned());
    let size =
        rsh_client::terminal::local_window_size().unwrap_or(rsh_client::terminal::WindowSize {
            cols: 80,
            rows: 24,
            ..Default::default()
        });
    let command = client
        .exec(request.pty(term.into_bytes(), session::pty_size(size)))
        .await?;
    let remote_input = CommandInput::of(&command);
    let signals = LocalSignals::install().map_err(|err| {
        Failure::Rsh(ClientError::connection_lost(format!(
            "cannot catch signals: {err}"
        )))
    })?;
    let output: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if std::io::stdout().is_terminal() {
        match rsh_client::terminal::TtyOutput::open(std::io::stdout()) {
            Ok(tty) => Box::new(tty),
            Err(_) => Box::new(tokio::io::stdout()),
        }
    } else {
        Box::new(tokio::io::stdout())
    };
    let local = Local {
        // Raw mode is entered below whenever stdin is a terminal.
        input: raw_local_reader(),
        output,
        messages: tokio::io::stderr(),
    };
    let filter = rsh_client::escape::EscapeFilter::new(escape);
    let end = if std::io::stdin().is_terminal() {
        let raw = rsh_client::terminal::RawMode::enter(std::io::stdin()).map_err(|err| {
            Failure::Rsh(ClientError::connection_lost(format!(
                "cannot set the terminal to raw mode: {err}"
            )))
        })?;
        let end = session::run(local, &raw, signals, filter, &remote_input, command).await;
        // Before any message: the terminal is sane again when it is printed.
        drop(raw);
        end
    } else {
        session::run(local, &NoTerminal, signals, filter, &remote_input, command).await
    };
    if client.server_is_leaving() {
        super::exit::closed_by_remote_host(host);
    }
    let closed = || {
        if !quiet && std::io::stdin().is_terminal() {
            eprintln!("Connection to {host} closed.");
        }
    };
    match end {
        SessionEnd::Exited(status) => {
            closed();
            Ok(exit_code(&status))
        }
        SessionEnd::Disconnected => {
            closed();
            Ok(ExitCode::from(EXIT_RSH_FAILURE))
        }
        SessionEnd::Signalled(number) => Ok(killed_by_signal(number)),
        SessionEnd::ConnectionLost(reason) => Ok(fail(&reason)),
        SessionEnd::LocalOutput(err) => Ok(fail(&format!("cannot write to the terminal: {err}"))),
    }
}
