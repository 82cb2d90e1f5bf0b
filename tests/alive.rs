//! Liveness probes (protocol version 3): `ServerAliveInterval` and
//! `ServerAliveCountMax` on the client, `--client-alive-interval` and
//! `--client-alive-count-max` on the server, and version-2 peers never sent
//! a Ping.

use crate::util::{self, TestServer, Transport, WAIT};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use rsh_proto::{Codec, ExitStatus, Frame, Hello};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Reads and decodes (in `version`) everything a peer sends until it closes
/// the connection or `WAIT` passes, never answering; returns the frames.
fn read_without_answering(stream: &mut UnixStream, version: u16) -> Vec<Frame> {
    read_frames_until(stream, version, |_| false)
}

/// Reads and decodes (in `version`) what a peer sends, never answering,
/// until a frame for which `last` holds, the end of the connection, or
/// `WAIT`; returns the frames.
fn read_frames_until(
    stream: &mut UnixStream,
    version: u16,
    last: impl Fn(&Frame) -> bool,
) -> Vec<Frame> {
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut codec = Codec::new().with_version(version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!("reading from the peer: {err}"),
        }
        while let Some(frame) = codec.decode(&mut buf).expect("the peer sends valid frames") {
            let done = last(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
    frames
}

fn pings(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|frame| matches!(frame, Frame::Ping { .. }))
        .count()
}

/// A server that completes the greeting and then never sends another byte
/// (a stopped process, a broken middlebox): the client probes it and gives
/// up with 255 and ssh's one-line reason, instead of hanging forever.
#[test]
fn client_gives_up_on_a_server_that_stops_answering() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let silent_server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.write_all(&Hello::current().encode()).expect("greet");
        let mut theirs = [0u8; 8];
        stream.read_exact(&mut theirs).expect("client greeting");
        let version = Hello::current()
            .negotiate(Hello::decode(&theirs).expect("rsh"))
            .expect("a common version");
        read_without_answering(&mut stream, version)
    });
    let dest = format!("unix:{}", socket.display());
    let home = tempfile::tempdir().expect("home");
    let mut client = Command::new(util::client_bin())
        .env("RSH_HOME", home.path())
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .args([&dest, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let status = util::wait_child(&mut client, WAIT);
    if status.is_none() {
        let _ = client.kill();
        let _ = client.wait();
    }
    let status = status.expect("the client gives up on a silent server");
    let mut stderr = String::new();
    client
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert_eq!(
        stderr,
        format!("rsh-client: connection lost: Timeout, server {dest} not responding.\n")
    );
    let frames = silent_server.join().expect("the silent server ends");
    assert!(matches!(frames.first(), Some(Frame::Exec(_))), "{frames:?}");
    // ServerAliveCountMax probes, then the end, as ssh.
    assert_eq!(pings(&frames), 2, "{frames:?}");
}

/// Connects to the server's socket raw and greets with `hello`; returns the
/// stream and the version agreed.
fn raw_connect(server: &TestServer, hello: Hello) -> (UnixStream, u16) {
    let mut raw = UnixStream::connect(&server.socket).expect("connect");
    raw.set_read_timeout(Some(WAIT)).expect("read timeout");
    raw.write_all(&hello.encode()).expect("greeting");
    let mut theirs = [0u8; 8];
    raw.read_exact(&mut theirs).expect("server greeting");
    let version = hello
        .negotiate(Hello::decode(&theirs).expect("rsh"))
        .expect("a common version");
    (raw, version)
}

fn send(raw: &mut UnixStream, version: u16, frames: &[Frame]) {
    let mut wire = BytesMut::new();
    let mut codec = Codec::new().with_version(version);
    for frame in frames {
        codec.encode(frame, &mut wire).expect("encode");
    }
    raw.write_all(&wire).expect("send frames");
}

fn exec(channel: u32, command: &str) -> Frame {
    Frame::Exec(rsh_proto::Exec {
        channel,
        window: 1 << 20,
        command: command.as_bytes().to_vec(),
        ..rsh_proto::Exec::default()
    })
}

/// sshd's ClientAlive: a client that stops answering (here one that never
/// does) is probed `--client-alive-count-max` times, then its connection is
/// closed with a log line naming the peer and the reason, and its command
/// is ended as when a client vanishes.
#[test]
fn server_closes_a_connection_whose_client_stopped_answering() {
    let server = TestServer::start_with(
        Transport::Unix,
        &[
            "--client-alive-interval",
            "1",
            "--client-alive-count-max",
            "2",
        ],
    );
    let (mut raw, version) = raw_connect(&server, Hello::current());
    assert_eq!(version, 3);
    send(&mut raw, version, &[exec(1, "sleep 60")]);
    let frames = read_without_answering(&mut raw, version);
    assert_eq!(pings(&frames), 2, "{frames:?}");
    let event = server.wait_for_event(|ev| ev.text("reason") == "client-alive");
    assert_eq!(event.level(), "WARN");
    assert!(
        !event.text("peer").is_empty(),
        "the peer is named: {event:?}"
    );
    assert_eq!(event.text("unanswered"), "2");
    // The command does not outlive its client: ended as when one vanishes.
    let ended = server.wait_for_event(|ev| ev.text("status") == "client gone");
    assert_eq!(ended.text("command"), "sleep 60");
}

/// The server answers a Ping whether or not it probes its clients itself
/// (here with ClientAlive off, the default).
#[test]
fn server_answers_a_ping_with_its_cookie() {
    let server = TestServer::start(Transport::Unix);
    let (mut raw, version) = raw_connect(&server, Hello::current());
    send(
        &mut raw,
        version,
        &[Frame::Ping {
            cookie: 0xdead_beef_0bad_cafe,
        }],
    );
    let frames = read_frames_until(&mut raw, version, |frame| {
        matches!(frame, Frame::Pong { .. })
    });
    assert_eq!(
        frames.last(),
        Some(&Frame::Pong {
            cookie: 0xdead_beef_0bad_cafe
        })
    );
}

/// A version-2 client knows no Ping: a server that probes its clients
/// never sends it one, and serves it as before through a silence longer
/// than the probes would allow a version-3 client.
#[test]
fn server_never_pings_a_version_2_client() {
    let server = TestServer::start_with(
        Transport::Unix,
        &[
            "--client-alive-interval",
            "1",
            "--client-alive-count-max",
            "1",
        ],
    );
    let v2_peer = Hello {
        version: 1,
        max_version: 2,
    };
    let (mut raw, version) = raw_connect(&server, v2_peer);
    assert_eq!(version, 2);
    send(
        &mut raw,
        version,
        &[
            exec(1, "sleep 3; echo done"),
            Frame::StdinEnd { channel: 1 },
        ],
    );
    // A Ping would not even decode as version 2.
    let frames = read_frames_until(&mut raw, version, |frame| {
        matches!(frame, Frame::Exit { .. })
    });
    let stdout: Vec<u8> = frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Stdout { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stdout, b"done\n", "{frames:?}");
    assert_eq!(
        frames.last(),
        Some(&Frame::Exit {
            channel: 1,
            status: ExitStatus::Code(0)
        })
    );
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn probing(interval_secs: u64, count_max: u32) -> Option<rsh_client::ServerAlive> {
    Some(rsh_client::ServerAlive {
        interval: Duration::from_secs(interval_secs),
        count_max,
        server: "test-server".to_owned(),
    })
}

/// A client with ServerAlive on never sends a Ping to a version-2 server,
/// however long it stays silent (paused time: the silence costs nothing).
#[test]
fn client_never_pings_a_version_2_server() {
    paused_runtime().block_on(async {
        let (client_end, mut server_end) = tokio::io::duplex(64 * 1024);
        let fake_server = tokio::spawn(async move {
            let v2_server = Hello {
                version: 1,
                max_version: 2,
            };
            let version = rsh_proto::io::greet_as(&mut server_end, WAIT, v2_server)
                .await
                .expect("greeting");
            assert_eq!(version, 2);
            let mut framed = Framed::new(server_end, Codec::new().with_version(2));
            let Some(Ok(Frame::Exec(exec))) = framed.next().await else {
                panic!("expected an Exec");
            };
            // Ten intervals of silence from us. The client may finish its
            // request (StdinEnd), then says nothing: a Ping would not even
            // be encodable, and the connection would end.
            let mut quiet = false;
            for _ in 0..8 {
                match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
                    Err(_) => {
                        quiet = true;
                        break;
                    }
                    Ok(Some(Ok(Frame::StdinEnd { .. } | Frame::WindowAdjust { .. }))) => {}
                    Ok(other) => panic!("the client sent {other:?}"),
                }
            }
            assert!(quiet, "the client went on sending");
            framed
                .send(Frame::Exit {
                    channel: exec.channel,
                    status: ExitStatus::Code(0),
                })
                .await
                .expect("send exit");
            framed
        });
        let client = rsh_client::Client::over_probing(client_end, probing(1, 1))
            .await
            .expect("greeting");
        assert_eq!(client.protocol_version(), 2);
        let out = client.run("quiet").await.expect("served as before");
        assert_eq!(out.status, ExitStatus::Code(0));
        drop(fake_server.await.expect("the fake server ends"));
    });
}

/// A version-3 client answers the server's Ping with its cookie, with or
/// without probes of its own.
#[test]
fn client_answers_a_ping_with_its_cookie() {
    paused_runtime().block_on(async {
        for alive in [None, probing(5, 3)] {
            let (client_end, mut server_end) = tokio::io::duplex(64 * 1024);
            let fake_server = tokio::spawn(async move {
                let version = rsh_proto::io::greet_as(&mut server_end, WAIT, Hello::current())
                    .await
                    .expect("greeting");
                let mut framed = Framed::new(server_end, Codec::new().with_version(version));
                framed
                    .send(Frame::Ping { cookie: 77 })
                    .await
                    .expect("send ping");
                tokio::time::timeout(WAIT, framed.next()).await
            });
            let client = rsh_client::Client::over_probing(client_end, alive)
                .await
                .expect("greeting");
            assert_eq!(client.protocol_version(), 3);
            let answer = fake_server.await.expect("the fake server ends");
            assert!(
                matches!(answer, Ok(Some(Ok(Frame::Pong { cookie: 77 })))),
                "{answer:?}"
            );
            drop(client);
        }
    });
}

/// The real thing: a client probing the real server is kept alive by its
/// Pongs through a silence longer than its probes allow, and gives up on
/// the same server once it is stopped (SIGSTOP: its kernel still
/// acknowledges every segment, so TCP keepalive alone would wait forever).
#[test]
fn client_probes_the_real_server_and_gives_up_when_it_is_stopped() {
    let server = TestServer::start(Transport::Unix);
    let probing = ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"];
    let out = util::run_with_stdin(
        server
            .client()
            .args(probing)
            .args(["-c", "sleep 3; echo answered"]),
        b"",
    );
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"answered\n"[..]),
        "{}",
        util::stderr(&out)
    );

    let (mut client, _stdout) = {
        use std::io::BufRead;
        let mut running = server
            .client()
            .args(probing)
            .args(["-c", "echo started; sleep 60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let mut stdout = std::io::BufReader::new(running.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        assert_eq!(line, "started\n");
        (running, stdout)
    };
    util::signal(server.pid(), nix::sys::signal::Signal::SIGSTOP);
    let status = util::wait_child(&mut client, WAIT);
    util::signal(server.pid(), nix::sys::signal::Signal::SIGCONT);
    if status.is_none() {
        let _ = client.kill();
        let _ = client.wait();
    }
    let status = status.expect("the client gives up on a stopped server");
    let mut stderr = String::new();
    client
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("not responding"), "{stderr}");
}
