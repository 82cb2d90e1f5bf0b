//! rsh-tls's record layer, the receiving side, after a handshake taken as
//! done with fixed secrets: fed what a peer holding the keys could send
//! (records of every content type, any inner plaintext and padding,
//! KeyUpdates, NewSessionTickets and other handshake fragments, alerts) and
//! what the network could make of it (raw bytes, bit flips, cuts), served in
//! reads of a size the input picks.
//!
//! Properties: nothing panics; what is buffered stays under the bound
//! (`TlsStream::MAX_BUFFERED`) whatever arrives; the data read is a prefix
//! of the application data the peer sealed (nothing forged, reordered or
//! lost before the first refusal); every error is final (the next read fails
//! too) and a clean end stays the end; a refused record is answered with a
//! fatal alert that the peer can open (never `close_notify`).
#![no_main]

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use rsh_tls::rustls::{self, AlertDescription, Side};
use rsh_tls::stream::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const OURS_IN: [u8; 32] = [0x11; 32];
const OURS_OUT: [u8; 32] = [0x22; 32];

/// A transport that serves `input` in reads of at most `chunk` bytes, then
/// its end, and keeps what is written.
struct Wire {
    input: Vec<u8>,
    at: usize,
    chunk: usize,
    output: Rc<RefCell<Vec<u8>>>,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.input.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.input[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.borrow_mut().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn wire(input: Vec<u8>, chunk: usize) -> (Wire, Rc<RefCell<Vec<u8>>>) {
    let output = Rc::new(RefCell::new(Vec::new()));
    let wire = Wire {
        input,
        at: 0,
        chunk: chunk.max(1),
        output: output.clone(),
    };
    (wire, output)
}

/// Input bytes, taken from the front; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0 {
            [first, rest @ ..] => {
                self.0 = rest;
                *first
            }
            [] => 0,
        }
    }
    fn u16(&mut self) -> usize {
        usize::from(u16::from_be_bytes([self.byte(), self.byte()]))
    }
    fn bytes(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// The application data an inner plaintext carries, if it is that.
fn application_data(inner: &[u8]) -> Option<&[u8]> {
    let type_at = inner.iter().rposition(|&byte| byte != 0)?;
    (inner[type_at] == 23).then(|| &inner[..type_at])
}

fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Reads from `stream` once, without waiting (the wire never makes it).
fn read_once(stream: &mut TlsStream<Wire>, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0u8; 4096];
    let mut read = ReadBuf::new(&mut buf);
    match Pin::new(stream).poll_read(&mut cx, &mut read) {
        Poll::Ready(Ok(())) => {
            out.extend_from_slice(read.filled());
            Ok(read.filled().len())
        }
        Poll::Ready(Err(err)) => Err(err),
        Poll::Pending => Err(io::Error::other("a read from memory waited")),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let side = if input.byte() & 1 == 0 {
        Side::Server
    } else {
        Side::Client
    };
    let peer_side = match side {
        Side::Server => Side::Client,
        Side::Client => Side::Server,
    };
    let chunk = 1 + usize::from(input.byte()) * 97;

    // The peer seals what the input asks for.
    let (sink, _) = wire(Vec::new(), 1);
    let Ok(mut peer) = TlsStream::with_fixed_secrets(sink, peer_side, OURS_IN, OURS_OUT) else {
        return;
    };
    let mut sent = Vec::new();
    let mut expected = Vec::new();
    let mut steps = 0;
    while !input.0.is_empty() && steps < 64 {
        steps += 1;
        let op = input.byte();
        match op % 9 {
            // A record: content, its type, padding (zeros, up to 64 KiB).
            0..=2 => {
                let content_type = match op % 9 {
                    0 => 23,
                    1 => 22,
                    _ => input.byte(),
                };
                let len = usize::from(input.byte());
                let mut inner = input.bytes(len).to_vec();
                inner.push(content_type);
                let padding = if input.byte() & 1 == 1 { input.u16() } else { 0 };
                inner.resize(inner.len() + padding, 0);
                if let Some(data) = application_data(&inner) {
                    expected.extend_from_slice(data);
                }
                sent.extend(peer.seal_inner_plaintext(&inner));
            }
            // Application data of any length up to 2^14 + 1 and past it.
            3 => {
                let len = input.u16() % (16 * 1024 + 300);
                let mut inner = vec![b'd'; len];
                inner.push(23);
                expected.extend_from_slice(&inner[..len]);
                sent.extend(peer.seal_inner_plaintext(&inner));
            }
            // A KeyUpdate, and the peer's key moves on.
            4 => {
                let request = input.byte() & 1;
                sent.extend(peer.seal_inner_plaintext(&[24, 0, 0, 1, request, 22]));
                if peer.next_tx_key().is_err() {
                    return;
                }
            }
            // A NewSessionTicket, cut into up to four records.
            5 => {
                let len = input.u16() % 2048;
                let total = (len as u32).to_be_bytes();
                let mut message = vec![4, total[1], total[2], total[3]];
                message.resize(4 + len, 0x5a);
                let mut rest = &message[..];
                for _ in 0..3 {
                    let cut = usize::from(input.byte()).min(rest.len());
                    let mut inner = rest[..cut].to_vec();
                    inner.push(22);
                    sent.extend(peer.seal_inner_plaintext(&inner));
                    rest = &rest[cut..];
                }
                let mut inner = rest.to_vec();
                inner.push(22);
                sent.extend(peer.seal_inner_plaintext(&inner));
            }
            // Raw bytes from the network.
            6 => {
                let len = usize::from(input.byte());
                sent.extend_from_slice(input.bytes(len));
            }
            // A bit flipped somewhere in what was sent.
            7 => {
                let at = input.u16();
                let bit = input.byte() % 8;
                if !sent.is_empty() {
                    let at = at % sent.len();
                    sent[at] ^= 1 << bit;
                }
            }
            // What was sent, cut short.
            _ => {
                let cut = usize::from(input.byte());
                sent.truncate(sent.len().saturating_sub(cut));
            }
        }
    }

    let wire_len = sent.len();
    let (io, output) = wire(sent, chunk);
    let Ok(mut ours) = TlsStream::with_fixed_secrets(io, side, OURS_OUT, OURS_IN) else {
        return;
    };
    let mut got = Vec::new();
    // Each read takes at least one byte off the wire or hands out data.
    let mut outcome = None;
    for _ in 0..wire_len + expected.len() + 8 {
        let result = read_once(&mut ours, &mut got);
        assert!(ours.buffered() <= TlsStream::<Wire>::MAX_BUFFERED);
        match result {
            Ok(0) => {
                outcome = Some(Ok(()));
                break;
            }
            Ok(_) => {}
            Err(err) => {
                outcome = Some(Err(err));
                break;
            }
        }
    }
    assert!(
        expected.starts_with(&got),
        "read data the peer did not send ({} bytes read)",
        got.len()
    );
    match outcome {
        None => panic!("the reads did not end"),
        // close_notify: the end stays the end.
        Some(Ok(())) => {
            assert_eq!(read_once(&mut ours, &mut got).ok(), Some(0));
        }
        Some(Err(err)) => {
            let again = read_once(&mut ours, &mut got);
            assert!(again.is_err(), "a read after {err:?} succeeded");
            let refused = err.kind() == io::ErrorKind::InvalidData
                && !matches!(tls_error(&err), Some(rustls::Error::AlertReceived(_)));
            let written = output.borrow().clone();
            if refused {
                // The peer opens our fatal alert.
                let (io, _) = wire(written, 4096);
                let Ok(mut reader) = TlsStream::with_fixed_secrets(io, peer_side, OURS_IN, OURS_OUT)
                else {
                    return;
                };
                let alert = read_once(&mut reader, &mut Vec::new()).expect_err("an alert");
                match tls_error(&alert) {
                    Some(rustls::Error::AlertReceived(description)) => {
                        assert_ne!(*description, AlertDescription::CloseNotify)
                    }
                    _ => panic!("the peer read {alert:?} after our {err:?}"),
                }
            } else {
                assert!(output.borrow().is_empty(), "an alert answered {err:?}");
            }
        }
    }
});
