//! The README's quick start: an rsh server on a temporary Unix socket, and a
//! few commands run through the client library, output streamed as it comes.
//!
//! `cargo run --release --example quickstart`

use anyhow::Context;
use bytes::Bytes;
use rsh_client::{Client, Event, ExecRequest};
use rsh_config::Endpoint;
use rsh_server::{Listener, Server, ServerConfig};
use std::io::Write;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let socket = dir.path().join("rsh.sock");
    let listener =
        Listener::bind(&Endpoint::Unix(socket.clone()), None).context("binding the socket")?;
    let shutdown = CancellationToken::new();
    let server =
        tokio::spawn(Server::new(ServerConfig::default(), vec![listener]).run(shutdown.clone()));
    println!("rsh server listening on unix:{}\n", socket.display());

    let client = Client::connect_unix(&socket).await?;

    // 1. A command and its whole output.
    let output = client
        .run("uname -sr; echo \"running as $(id -un) in $PWD\"")
        .await?;
    println!(
        "$ uname -sr; ...\n{}-> {:?}\n",
        String::from_utf8_lossy(&output.stdout),
        output.status
    );

    // 2. Output streamed as it is produced, stderr kept apart.
    println!("$ for i in 1 2 3; do echo tick $i; sleep 0.2; done; echo oops >&2; exit 3");
    let started = Instant::now();
    let mut command = client
        .exec("for i in 1 2 3; do echo tick $i; sleep 0.2; done; echo oops >&2; exit 3")
        .await?;
    command.close_stdin().await?;
    while let Some(event) = command.next_event().await? {
        match event {
            Event::Stdout(data) => print!(
                "[{:>4} ms] stdout: {}",
                started.elapsed().as_millis(),
                String::from_utf8_lossy(&data)
            ),
            Event::Stderr(data) => print!(
                "[{:>4} ms] stderr: {}",
                started.elapsed().as_millis(),
                String::from_utf8_lossy(&data)
            ),
            Event::Exit(status) => println!("-> {status:?}\n"),
        }
        std::io::stdout().flush()?;
    }

    // 3. Stdin forwarded; a big reply arrives whole (no 1024-byte cut, no
    //    bytes bleeding into the next reply).
    let command = client.exec("tr a-z A-Z | wc -c").await?;
    command
        .write_stdin(Bytes::from(vec![b'x'; 5_000_000]))
        .await?;
    command.close_stdin().await?;
    let output = command.collect().await?;
    println!(
        "$ (5 MB of stdin) | tr a-z A-Z | wc -c\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = client.run("seq 1 100000").await?;
    println!(
        "$ seq 1 100000   -> {} bytes, last line {:?}\n",
        output.stdout.len(),
        String::from_utf8_lossy(
            output
                .stdout
                .split(|&b| b == b'\n')
                .rev()
                .nth(1)
                .unwrap_or_default()
        )
    );

    // 4. Several commands at once on one connection, and a timeout.
    let (a, b) = tokio::join!(
        client.run("sleep 0.3; echo first"),
        client.run("echo second")
    );
    println!(
        "$ two at once -> {:?} {:?}",
        String::from_utf8_lossy(&a?.stdout).trim(),
        String::from_utf8_lossy(&b?.stdout).trim()
    );
    let timed = client
        .run(ExecRequest::new("sleep 10").timeout(Duration::from_millis(300)))
        .await?;
    println!("$ sleep 10 (timeout 300 ms) -> {:?}", timed.status);

    shutdown.cancel();
    server.await.context("server task")?;
    println!("\nserver shut down; socket removed: {}", !socket.exists());
    Ok(())
}
