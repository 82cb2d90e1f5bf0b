//! The log lines for refused records: rate-limited over all connections, so
//! a flood of hostile peers costs a handful of lines. A test binary of its
//! own: tracing's per-callsite interest cache is process-wide, and the
//! limit is too.

use std::io::Write;
use std::sync::{Arc, Mutex};

use rsh_tls::rustls;
use rsh_tls::stream::{TlsStream, REFUSAL_LOG_BURST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Log output, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const HOSTILE_RECORDS: usize = 10_000;

/// One connection (a stream with fixed secrets) that receives one hostile
/// record of the kind `which` picks.
async fn refuse_one(which: usize) {
    let (ours_io, peer_io) = tokio::io::duplex(64 * 1024);
    let secret_in = [0x11; 32];
    let secret_out = [0x22; 32];
    let mut ours =
        TlsStream::with_fixed_secrets(ours_io, rustls::Side::Server, secret_out, secret_in)
            .expect("ours");
    let mut peer =
        TlsStream::with_fixed_secrets(peer_io, rustls::Side::Client, secret_in, secret_out)
            .expect("peer");
    let record = match which % 4 {
        0 => {
            let mut record = peer.seal_inner_plaintext(b"hello\x17");
            record[6] ^= 1;
            record
        }
        1 => vec![23, 3, 3, 0x50, 0],
        2 => peer.seal_inner_plaintext(&[4, 0, 0, 0, 22]),
        _ => peer.seal_inner_plaintext(&[22]),
    };
    peer.get_mut().write_all(&record).await.expect("send");
    let mut buf = [0u8; 8];
    ours.read(&mut buf).await.expect_err("refused");
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_hostile_records_log_a_bounded_number_of_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for which in 0..HOSTILE_RECORDS {
        refuse_one(which).await;
    }
    // The next interval's first line says how many were not logged.
    tokio::time::advance(rsh_tls::stream::REFUSAL_LOG_INTERVAL).await;
    refuse_one(0).await;
    let log = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    let mut lines = log
        .lines()
        .filter(|line| line.contains("refused a TLS record"))
        .count();
    let suppressed = format!(
        "suppressed={}",
        HOSTILE_RECORDS - REFUSAL_LOG_BURST as usize
    );
    assert!(
        log.lines()
            .last()
            .is_some_and(|line| line.contains(&suppressed)),
        "the next interval's line counts the rest:\n{log}"
    );
    lines -= 1;
    println!("{HOSTILE_RECORDS} hostile records: {lines} WARN lines");
    assert!(lines >= 1, "refusals are logged:\n{log}");
    assert!(
        lines <= REFUSAL_LOG_BURST as usize,
        "{lines} lines for {HOSTILE_RECORDS} hostile records (the clock stood still):\n{log}"
    );
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("alert=BadRecordMac"), "{log}");
}
