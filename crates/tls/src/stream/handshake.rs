//! The handshake, run by rustls's unbuffered API, then handed over to a
//! [`TlsStream`] with the traffic secrets.

use super::conn::*;
use super::keys::*;
use super::record::*;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::ExtractedSecrets;
use std::io::{self};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a handshake failed, with the transport back (to let the peer read
/// an alert before closing, say).
pub struct HandshakeError<IO> {
    /// The failure: a rustls error inside an `InvalidData` error, or the
    /// transport's.
    pub error: io::Error,
    /// The transport.
    pub io: IO,
}

impl<IO> std::fmt::Debug for HandshakeError<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// The two unbuffered connection types, driven alike.
trait Handshaking {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &rustls::CommonState;
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
}

impl Handshaking for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection()
            .map(|(secrets, conn)| (secrets, Kernel::Client(conn)))
    }
}

impl Handshaking for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection()
            .map(|(secrets, conn)| (secrets, Kernel::Server(conn)))
    }
}

/// Runs the client side of the handshake over `io` (the config must have
/// `enable_secret_extraction`, as [`crate::client_config`]'s has).
///
/// # Errors
/// The handshake failed; the transport comes back with the error.
pub async fn connect<IO>(
    config: std::sync::Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    io: IO,
) -> Result<TlsStream<IO>, HandshakeError<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match UnbufferedClientConnection::new(config, name) {
        Ok(conn) => handshake(conn, io).await,
        Err(err) => Err(HandshakeError {
            error: invalid(err),
            io,
        }),
    }
}

/// Runs the server side of the handshake over `io` (the config must have
/// `enable_secret_extraction`, as [`crate::server_config`]'s has).
///
/// # Errors
/// The handshake failed (after the alert, if any, was sent); the transport
/// comes back with the error.
pub async fn accept<IO>(
    config: std::sync::Arc<rustls::ServerConfig>,
    io: IO,
) -> Result<TlsStream<IO>, HandshakeError<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match UnbufferedServerConnection::new(config) {
        Ok(conn) => handshake(conn, io).await,
        Err(err) => Err(HandshakeError {
            error: invalid(err),
            io,
        }),
    }
}

/// One step of the handshake, decided while rustls borrows the buffers.
enum Step {
    Again,
    Read,
    Write,
    Done,
    Failed(io::Error),
}

async fn handshake<C, IO>(mut conn: C, mut io: IO) -> Result<TlsStream<IO>, HandshakeError<IO>>
where
    C: Handshaking,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = vec![0u8; MAX_CIPHERTEXT + HEADER];
    let mut used = 0;
    let mut outgoing: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut early: Vec<u8> = Vec::new();
    // A failure is reported once the alert rustls queued for it is sent.
    let mut failed: Option<io::Error> = None;
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut incoming[..used]);
        let step = match state {
            Err(err) => match failed.take() {
                // Once more, for the alert rustls queued for it.
                None => {
                    failed = Some(invalid(err));
                    Step::Again
                }
                Some(first) => Step::Failed(first),
            },
            Ok(ConnectionState::EncodeTlsData(mut data)) => loop {
                match data.encode(&mut outgoing[sent..]) {
                    Ok(n) => {
                        sent += n;
                        break Step::Write;
                    }
                    Err(EncodeError::InsufficientSize(size)) => {
                        outgoing.resize(sent + size.required_size, 0);
                    }
                    Err(err) => break Step::Failed(io::Error::other(err.to_string())),
                }
            },
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // Written below, before the next step; rustls only needs to
                // know that it will be.
                data.done();
                Step::Write
            }
            // After a failure, only the alert is of interest.
            Ok(_) if failed.is_some() => Step::Write,
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
            Ok(ConnectionState::ReadTraffic(mut data)) => {
                // The peer's first data, in the same read as its Finished
                // (the client's greeting, on the server): kept for the
                // stream's first read.
                let mut step = Step::Again;
                while let Some(record) = data.next_record() {
                    match record {
                        Ok(record)
                            if early.len() + record.payload.len() <= HANDSHAKE_BUFFER_MAX =>
                        {
                            early.extend_from_slice(record.payload);
                        }
                        Ok(_) => {
                            step = Step::Failed(invalid(rustls::Error::General(
                                "too much data during the handshake".into(),
                            )));
                            break;
                        }
                        Err(err) => {
                            step = Step::Failed(invalid(err));
                            break;
                        }
                    }
                }
                step
            }
            Ok(ConnectionState::ReadEarlyData(_)) => Step::Failed(invalid(rustls::Error::General(
                "0-RTT data is not accepted".into(),
            ))),
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                Step::Failed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ))
            }
            Ok(_) => Step::Failed(io::Error::other("unexpected TLS handshake state")),
        };
        incoming.copy_within(discard..used, 0);
        used -= discard;
        match step {
            Step::Again => {}
            Step::Write => {
                if let Err(error) = write_out(&mut io, &outgoing[..sent]).await {
                    return Err(HandshakeError {
                        error: failed.take().unwrap_or(error),
                        io,
                    });
                }
                outgoing.clear();
                sent = 0;
                if let Some(error) = failed.take() {
                    // The alert rustls queued for the failure is out (asking
                    // rustls for more would make it fail again on the same
                    // bytes).
                    return Err(HandshakeError { error, io });
                }
            }
            Step::Read => {
                if let Some(error) = failed.take() {
                    // The alert (if any) is out.
                    return Err(HandshakeError { error, io });
                }
                if used == incoming.len() {
                    if incoming.len() >= HANDSHAKE_BUFFER_MAX {
                        return Err(HandshakeError {
                            error: invalid(rustls::Error::General(
                                "handshake message too large".into(),
                            )),
                            io,
                        });
                    }
                    incoming.resize((incoming.len() * 2).min(HANDSHAKE_BUFFER_MAX), 0);
                }
                match io.read(&mut incoming[used..]).await {
                    Ok(0) => {
                        return Err(HandshakeError {
                            error: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "tls handshake eof",
                            ),
                            io,
                        })
                    }
                    Ok(n) => used += n,
                    Err(error) => return Err(HandshakeError { error, io }),
                }
            }
            Step::Failed(error) => return Err(HandshakeError { error, io }),
            Step::Done => {
                if let Some(error) = failed.take() {
                    return Err(HandshakeError { error, io });
                }
                let common = conn.common();
                let peer = PeerInfo {
                    certificates: common
                        .peer_certificates()
                        .map(|certs| certs.iter().map(|cert| cert.clone().into_owned()).collect())
                        .unwrap_or_default(),
                    alpn_protocol: common.alpn_protocol().map(<[u8]>::to_vec),
                };
                let built = conn
                    .into_kernel()
                    .map_err(invalid)
                    .and_then(|(secrets, kernel)| {
                        Keys::new(secrets, &kernel).map(|keys| (keys, kernel))
                    });
                return match built {
                    Ok((keys, kernel)) => Ok(TlsStream::new(
                        io,
                        keys,
                        kernel,
                        peer,
                        &early,
                        &incoming[..used],
                    )),
                    Err(error) => Err(HandshakeError { error, io }),
                };
            }
        }
    }
}

async fn write_out<IO: AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
