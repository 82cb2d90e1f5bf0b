//! Protocol version 2 against the real server: negotiation with a v2
//! client, a hand-rolled version-1 client still served exactly as before, a
//! v2 client talking to a version-1 server, and the requested-user check.

use crate::util::{self, TestServer, Transport, WAIT};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use rsh_client::{Client, ClientError, ErrorKind, ExecRequest, ExitStatus, PtySize};
use rsh_proto::{Codec, Frame, Hello};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tokio_util::codec::{Decoder, Framed};

/// The name of the user this test (and so the server) runs as.
fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .expect("passwd lookup")
        .expect("the test user has a passwd entry")
        .name
}

#[test]
fn v2_client_and_server_speak_version_2() {
    util::runtime().block_on(async {
        for transport in [Transport::Unix, Transport::Tls] {
            let server = TestServer::start(transport);
            let client = server.connect().await;
            // Version 2 or later: both speak the newest, which has all of 2.
            assert_eq!(
                client.protocol_version(),
                rsh_proto::VERSION,
                "{transport:?}"
            );
            let out = client.run("echo hi").await.expect("plain command");
            assert_eq!(
                (out.stdout, out.status),
                (b"hi\n".to_vec(), ExitStatus::Code(0))
            );
            // Asking for the server's own user is fine.
            let out = client
                .run(ExecRequest::new("id -un").user(me()))
                .await
                .expect("own user accepted");
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), me());
        }
    });
}

#[test]
fn another_user_is_refused_with_the_reason() {
    let server = TestServer::start(Transport::Unix);
    util::runtime().block_on(async {
        let client = server.connect().await;
        let err = client
            .run(ExecRequest::new("echo should not run").user("rsh-test-nobody"))
            .await
            .expect_err("another user must be refused");
        let ClientError::Refused { kind, message } = err else {
            panic!("expected a refusal, got {err}");
        };
        assert_eq!(kind, ErrorKind::WrongUser);
        assert_eq!(
            message,
            format!(
                "this server runs commands as {}; cannot log in as rsh-test-nobody",
                me()
            )
        );
        // The connection goes on serving.
        let out = client.run("echo still").await.expect("next command");
        assert_eq!(out.stdout, b"still\n");
    });
}

/// Frames from the server, decoded with `codec`, up to and including the
/// channel's Exit (or a channel-0 Error, or the end of the connection).
fn read_until_exit(stream: &mut UnixStream, version: u16) -> Vec<Frame> {
    let mut codec = Codec::new().with_version(version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        while let Some(frame) = codec
            .decode(&mut buf)
            .expect("the server sends valid frames")
        {
            let last = matches!(frame, Frame::Exit { .. } | Frame::Error { channel: 0, .. });
            frames.push(frame);
            if last {
                return frames;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return frames,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return frames,
            Err(err) => panic!("reading from the server: {err}"),
        }
    }
    panic!("no Exit within {WAIT:?}; got {frames:?}");
}

fn stdout_of(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Stdout { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Connects and sends a raw greeting; returns the server's greeting.
fn raw_connect(server: &TestServer, greeting: &[u8; 8]) -> (UnixStream, [u8; 8]) {
    let mut raw = UnixStream::connect(&server.socket).expect("connect");
    raw.set_read_timeout(Some(WAIT)).expect("read timeout");
    raw.write_all(greeting).expect("greeting");
    let mut theirs = [0u8; 8];
    raw.read_exact(&mut theirs).expect("server greeting");
    (raw, theirs)
}

/// A client written from the version-1 document, byte for byte (section 11:
/// `echo hi`), is served exactly as before.
#[test]
fn hand_rolled_version_1_client_still_works() {
    let server = TestServer::start(Transport::Unix);
    let (mut raw, theirs) = raw_connect(&server, b"RSH\0\x00\x01\x00\x00");
    // What a version-1 client checks: the magic and version 1 (the reserved
    // bytes are ignored).
    assert_eq!(&theirs[..6], b"RSH\0\x00\x01");
    raw.write_all(
        b"\x00\x00\x00\x21\x01\x00\x00\x00\x01\
          \x00\x20\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x00\
          \x00\x00\x00\x07echo hi\
          \x00\
          \x00\x00\x00\x00",
    )
    .expect("v1 Exec");
    raw.write_all(b"\x00\x00\x00\x05\x03\x00\x00\x00\x01")
        .expect("StdinEnd");
    let frames = read_until_exit(&mut raw, 1);
    assert_eq!(stdout_of(&frames), b"hi\n");
    assert_eq!(
        frames.last(),
        Some(&Frame::Exit {
            channel: 1,
            status: ExitStatus::Code(0)
        })
    );

    // A version-2 frame is no frame at all in version 1: the connection is
    // closed as for any unknown type.
    raw.write_all(b"\x00\x00\x00\x0d\x06\x00\x00\x00\x01\x00\x50\x00\x18\x00\x00\x00\x00")
        .expect("Resize");
    let frames = read_until_exit(&mut raw, 1);
    assert!(
        matches!(
            frames.last(),
            Some(Frame::Error { channel: 0, kind: ErrorKind::ProtocolViolation, message })
                if message.contains("unknown frame type 0x06")
        ),
        "{frames:?}"
    );
    server.wait_for_event(|ev| ev.text("cause").contains("unknown frame type 0x06"));
    assert_eq!(server.run("echo alive", b"").stdout, b"alive\n");
}

/// A version-2 peer skips frames of the extension range it does not know.
#[test]
fn version_2_server_skips_unknown_extension_frames() {
    let server = TestServer::start(Transport::Unix);
    // A version-2 peer: it speaks 1 to 2.
    let v2_peer = Hello {
        version: 1,
        max_version: 2,
    };
    let (mut raw, theirs) = raw_connect(&server, &v2_peer.encode());
    assert_eq!(
        v2_peer.negotiate(Hello::decode(&theirs).expect("rsh")),
        Ok(2)
    );
    let mut wire = BytesMut::new();
    let mut codec = Codec::new().with_version(2);
    for frame in [
        Frame::Unknown {
            channel: 1,
            frame_type: 0x9a,
            payload: bytes::Bytes::from_static(b"from the future"),
        },
        Frame::Exec(rsh_proto::Exec {
            channel: 1,
            window: 1 << 20,
            command: b"echo skipped".to_vec(),
            ..rsh_proto::Exec::default()
        }),
        Frame::StdinEnd { channel: 1 },
    ] {
        tokio_util::codec::Encoder::encode(&mut codec, &frame, &mut wire).expect("encode");
    }
    raw.write_all(&wire).expect("frames");
    let frames = read_until_exit(&mut raw, 2);
    assert_eq!(stdout_of(&frames), b"skipped\n");
    assert!(
        matches!(frames.last(), Some(Frame::Exit { .. })),
        "{frames:?}"
    );
}

/// A version-2 client against a version-1 server (an in-process stand-in
/// that speaks only version 1): plain commands work; a pty, a login shell or
/// a user name fail locally with a clear error, before anything is sent.
#[test]
fn v2_client_runs_plain_commands_on_a_version_1_server() {
    util::runtime().block_on(async {
        let (client_end, mut server_end) = tokio::io::duplex(64 * 1024);
        let fake_server = tokio::spawn(async move {
            let version = rsh_proto::io::greet_as(&mut server_end, WAIT, Hello::only(1))
                .await
                .expect("greeting");
            assert_eq!(version, 1);
            let mut frames = Framed::new(server_end, Codec::new().with_version(1));
            let mut execs = Vec::new();
            // Bounded: the client sends one Exec and one StdinEnd, then closes.
            while let Some(frame) = frames.next().await {
                match frame.expect("the client sends version-1 frames") {
                    Frame::Exec(exec) => {
                        let channel = exec.channel;
                        execs.push(exec);
                        for reply in [
                            Frame::Stdout {
                                channel,
                                data: bytes::Bytes::from_static(b"v1 says hi\n"),
                            },
                            Frame::Exit {
                                channel,
                                status: ExitStatus::Code(0),
                            },
                        ] {
                            frames.send(reply).await.expect("reply");
                        }
                    }
                    Frame::StdinEnd { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            execs
        });
        let client = Client::over(client_end).await.expect("greeting");
        assert_eq!(client.protocol_version(), 1);
        let out = client.run("echo hi").await.expect("plain command");
        assert_eq!(out.stdout, b"v1 says hi\n");
        let size = PtySize {
            cols: 80,
            rows: 24,
            ..PtySize::default()
        };
        for request in [
            ExecRequest::login_shell().pty("xterm", size),
            ExecRequest::new("top").pty("xterm", size),
            ExecRequest::login_shell(),
            ExecRequest::new("id").user(me()),
        ] {
            let err = client.exec(request).await.expect_err("needs version 2");
            assert!(
                matches!(err, ClientError::Unsupported { version: 1, .. }),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with("the server speaks rsh protocol version 1, which has no "),
                "{err}"
            );
        }
        drop(client);
        let execs = tokio::time::timeout(Duration::from_secs(10), fake_server)
            .await
            .expect("fake server ends when the client closes")
            .expect("fake server");
        assert_eq!(execs.len(), 1, "only the plain command reached the server");
        assert_eq!(execs[0].command, b"echo hi");
    });
}
