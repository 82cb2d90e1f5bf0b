//! A userspace delay proxy: added round-trip time without netem.
//!
//! This machine's kernel has no `sch_netem` (not even inside a network
//! namespace), so figure 4's "+50 ms RTT" row puts this proxy between the
//! clients (and the attackers) and the server instead: it listens on a
//! loopback port and relays every connection to the upstream address, each
//! chunk it reads released to the other side `one_way` after it was read, in
//! order, in both directions. So a request and its answer take `2 × one_way`
//! more than on bare loopback.
//!
//! What it models, and what it does not:
//! - The upstream connection is opened `one_way` after the client's is
//!   accepted (a SYN crossing the link), so the server sees a connection and
//!   its first bytes at about the same time, as it would behind a real link.
//!   The client's own `connect` completes at once (the kernel answers it
//!   here): one round trip less per connection than a real 50 ms link.
//! - End of stream (a FIN) is forwarded after the data before it, at its
//!   delay; so is a reset (a read error), after which the relay closes both
//!   sockets, the other with a reset too. A write that fails (the receiver
//!   is gone) resets the sender one `one_way` later.
//! - Backpressure: each direction queues at most [`QUEUE`] chunks of at most
//!   [`CHUNK`] bytes; when the queue is full the proxy stops reading and TCP
//!   pushes back on the sender. No bandwidth limit, no loss, no jitter.
//!
//! The proxy runs on its own single-worker runtime, so the bench's thread
//! (busy spawning a crowd of processes) does not hold the relayed bytes up.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most bytes one read takes (one queued chunk).
pub const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction before the proxy stops reading.
pub const QUEUE: usize = 64;
/// Connections waiting to be accepted by the proxy (capped by somaxconn).
const BACKLOG: u32 = 4096;
/// How long the accept loop backs off after an error (e.g. out of fds).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Counts of what the proxy did, for the report.
#[derive(Debug, Default)]
pub struct Counts {
    /// Connections accepted from clients.
    pub accepted: AtomicUsize,
    /// Upstream connections that could not be opened (client reset).
    pub upstream_failed: AtomicUsize,
    /// Resets forwarded (read errors) or made (write errors).
    pub resets: AtomicUsize,
}

/// A running proxy; stopped (every relay dropped) when dropped.
pub struct DelayProxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
    rt: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Listens on `listen` (port 0 for an ephemeral one) and relays each
    /// connection to `upstream`, every chunk `one_way` late each way.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> anyhow::Result<DelayProxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("delay-proxy")
            .enable_all()
            .build()
            .context("cannot start the delay proxy's runtime")?;
        let listener = rt
            .block_on(async { bind(listen) })
            .with_context(|| format!("delay proxy: cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        rt.spawn(serve(listener, upstream, one_way, counts.clone()));
        Ok(DelayProxy {
            addr,
            counts,
            rt: Some(rt),
        })
    }

    /// `IP:PORT` it listens on, as a client's destination.
    pub fn dest(&self) -> String {
        self.addr.to_string()
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // Not a blocking shutdown: the bench may drop it inside block_on.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    // std's 128 would drop SYNs of a 1,000-client burst (a 1 s retry each).
    socket.listen(BACKLOG)
}

/// Accepts until the runtime is shut down; one relay per connection.
async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
    counts: Arc<Counts>,
) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                counts.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, upstream, one_way, counts.clone()));
            }
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

/// One chunk (or the end) of a direction, due at `at`.
struct Item {
    at: Instant,
    what: What,
}

enum What {
    Data(Vec<u8>),
    /// The sender half-closed: shut our write side down.
    Eof,
    /// The sender's socket failed: reset the receiver and end the relay.
    Reset,
}

/// One connection: this task relays client → upstream (after opening the
/// upstream connection one `one_way` late); a second task the other way.
async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration, counts: Arc<Counts>) {
    let _ = client.set_nodelay(true);
    let accepted = Instant::now();
    let (client_read, client_write) = client.into_split();
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel(QUEUE);
    let reading = read_side(&client_read, tx, one_way, &stop);
    let connect_then_write = async {
        tokio::time::sleep_until(accepted + one_way).await;
        let up = match TcpStream::connect(upstream).await {
            Ok(up) => up,
            Err(_) => {
                // As a refused SYN would: the client sees a reset.
                counts.upstream_failed.fetch_add(1, Ordering::Relaxed);
                let _ = client_write.as_ref().set_zero_linger();
                stop.cancel();
                return;
            }
        };
        let _ = up.set_nodelay(true);
        let (up_read, up_write) = up.into_split();
        let back_stop = stop.clone();
        let back_counts = counts.clone();
        tokio::spawn(async move {
            direction(up_read, client_write, one_way, &back_stop, &back_counts).await;
        });
        write_side(rx, up_write, &client_read, one_way, &stop, &counts).await;
    };
    tokio::join!(reading, connect_then_write);
}

/// One direction in one task: reads `from`, writes each chunk to `to` at its
/// due time.
async fn direction(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    one_way: Duration,
    stop: &CancellationToken,
    counts: &Counts,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::join!(
        read_side(&from, tx, one_way, stop),
        write_side(rx, to, &from, one_way, stop, counts)
    );
}

/// Reads chunks, stamps each with its due time (read time + `one_way`) and
/// queues them; a full queue stops the reading (backpressure).
async fn read_side(
    from: &OwnedReadHalf,
    tx: mpsc::Sender<Item>,
    one_way: Duration,
    stop: &CancellationToken,
) {
    loop {
        let ready = tokio::select! {
            () = stop.cancelled() => return,
            ready = from.readable() => ready,
        };
        let what = match ready {
            Err(_) => What::Reset,
            // No buffer is held while waiting: thousands of idle relays.
            Ok(()) => {
                let mut buf = vec![0u8; CHUNK];
                match from.try_read(&mut buf) {
                    Ok(0) => What::Eof,
                    Ok(n) => {
                        buf.truncate(n);
                        if n < CHUNK / 4 {
                            buf.shrink_to_fit();
                        }
                        What::Data(buf)
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => What::Reset,
                }
            }
        };
        let last = !matches!(what, What::Data(_));
        let item = Item {
            at: Instant::now() + one_way,
            what,
        };
        let sent = tokio::select! {
            () = stop.cancelled() => return,
            sent = tx.send(item) => sent,
        };
        if sent.is_err() || last {
            return;
        }
    }
}

/// Writes each queued chunk to `to` at its due time; forwards the end.
async fn write_side(
    mut rx: mpsc::Receiver<Item>,
    mut to: OwnedWriteHalf,
    from: &OwnedReadHalf,
    one_way: Duration,
    stop: &CancellationToken,
    counts: &Counts,
) {
    loop {
        let item = tokio::select! {
            () = stop.cancelled() => return,
            item = rx.recv() => item,
        };
        let Some(item) = item else { return };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(item.at) => {}
        }
        match item.what {
            What::Data(data) => {
                let written = tokio::select! {
                    () = stop.cancelled() => return,
                    written = to.write_all(&data) => written,
                };
                if written.is_err() {
                    // The receiver is gone (reset); its reset reaches the
                    // sender one way later, as it would over the link.
                    counts.resets.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(one_way) => {}
                    }
                    let _ = from.as_ref().set_zero_linger();
                    stop.cancel();
                    return;
                }
            }
            What::Eof => {
                let _ = to.shutdown().await;
                return;
            }
            What::Reset => {
                counts.resets.fetch_add(1, Ordering::Relaxed);
                let _ = to.as_ref().set_zero_linger();
                stop.cancel();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant as StdInstant;

    const ONE_WAY: Duration = Duration::from_millis(25);
    /// Bounds every blocking read and write of the tests.
    const LIMIT: Duration = Duration::from_secs(30);

    /// A one-connection echo server on 127.0.0.1: echoes until end of
    /// stream, then half-closes (so the client sees the end come back).
    fn echo_once() -> anyhow::Result<(SocketAddr, std::thread::JoinHandle<anyhow::Result<u64>>)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let thread = std::thread::spawn(move || -> anyhow::Result<u64> {
            let (mut stream, _) = listener.accept()?;
            stream.set_read_timeout(Some(LIMIT))?;
            stream.set_write_timeout(Some(LIMIT))?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        stream.write_all(&buf[..n])?;
                        total += n as u64;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err.into()),
                }
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok(total)
        });
        Ok((addr, thread))
    }

    fn proxy_to(upstream: SocketAddr) -> anyhow::Result<DelayProxy> {
        DelayProxy::start("127.0.0.1:0".parse()?, upstream, ONE_WAY)
    }

    fn connect(proxy: &DelayProxy) -> anyhow::Result<std::net::TcpStream> {
        let stream = std::net::TcpStream::connect(proxy.addr)?;
        stream.set_read_timeout(Some(LIMIT))?;
        stream.set_write_timeout(Some(LIMIT))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Every round trip through the proxy takes at least the two delays it
    /// adds (a lower bound on our own sleep, not a speed assertion); the
    /// first also pays for the delayed upstream connect, which is in it.
    #[test]
    fn a_round_trip_takes_at_least_twice_the_one_way_delay() -> anyhow::Result<()> {
        let (upstream, echo) = echo_once()?;
        let proxy = proxy_to(upstream)?;
        let mut stream = connect(&proxy)?;
        for round in 0..3u8 {
            let started = StdInstant::now();
            stream.write_all(&[round; 5])?;
            let mut back = [0u8; 5];
            stream.read_exact(&mut back)?;
            let took = started.elapsed();
            assert_eq!(back, [round; 5]);
            assert!(took >= 2 * ONE_WAY, "round {round} took {took:?}");
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest)?;
        assert!(rest.is_empty());
        let echoed = echo
            .join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
        assert_eq!(echoed, 15);
        Ok(())
    }

    /// Megabytes each way, more than the queues hold (so backpressure is
    /// exercised), arrive in order and whole, and the end of stream comes
    /// back after the last byte.
    #[test]
    fn a_large_transfer_is_byte_exact_both_ways() -> anyhow::Result<()> {
        const LEN: usize = 3 * QUEUE * CHUNK + 12_345;
        let (upstream, echo) = echo_once()?;
        let proxy = proxy_to(upstream)?;
        let stream = connect(&proxy)?;
        // Not a repeating pattern of any chunk size: a reordered or
        // duplicated chunk would show.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let data: Vec<u8> = (0..LEN)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        let mut writer = stream.try_clone()?;
        let sent = data.clone();
        let sending = std::thread::spawn(move || -> std::io::Result<()> {
            // Uneven writes, some smaller than a chunk, some larger.
            for piece in sent.chunks(7_777) {
                writer.write_all(piece)?;
            }
            writer.shutdown(std::net::Shutdown::Write)
        });
        let mut reader = stream;
        let mut back = Vec::with_capacity(LEN);
        reader.read_to_end(&mut back)?;
        sending
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let echoed = echo
            .join()
            .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
        assert_eq!(echoed, LEN as u64);
        assert_eq!(back.len(), LEN);
        assert!(back == data, "the bytes came back changed");
        assert_eq!(proxy.counts().accepted.load(Ordering::Relaxed), 1);
        Ok(())
    }

    /// Nothing listens upstream: the client's connection is reset or closed,
    /// not left hanging.
    #[test]
    fn an_upstream_that_refuses_closes_the_client() -> anyhow::Result<()> {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
        let upstream = closed.local_addr()?;
        drop(closed);
        let proxy = proxy_to(upstream)?;
        let mut stream = connect(&proxy)?;
        let mut buf = [0u8; 16];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected a reset or the end, got {other:?}"),
        }
        assert_eq!(proxy.counts().upstream_failed.load(Ordering::Relaxed), 1);
        Ok(())
    }
}
