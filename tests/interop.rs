//! A third party's TLS: a client written against docs/PROTOCOL.md with
//! Python's `ssl` module (OpenSSL), not rustls, runs a command through the
//! real server over TLS 1.3 with its own key, sending megabytes of stdin and
//! reading megabytes of output. Both directions cross many TLS records, so
//! the server's record layer is checked against another implementation's,
//! not only against our own client's; and the real client against a server
//! on OpenSSL, for the client's.

use crate::util::{TestServer, Transport};
use std::process::Command;

/// What both Python peers share: reading exactly n bytes from the TLS
/// socket `s` (bound by each script before use) and building a frame
/// (PROTOCOL.md 4.1).
const FRAMING: &str = r#"
import struct

def recv_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise SystemExit("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)

def frame(kind, channel, payload=b""):
    return struct.pack(">IBI", 5 + len(payload), kind, channel) + payload
"#;

/// The client: greeting, Exec, stdin under the server's credit, output
/// under its own window with top-ups at a quarter, Exit. Prints
/// `stdout=<len> sha256=<hex> exit=<kind>:<value>`.
const CLIENT: &str = r#"
import hashlib, socket, ssl, struct, sys
host, port, cert_der, key_pem, cert_pem, stdin_len, command = sys.argv[1:8]
stdin_len = int(stdin_len)
with open(cert_der, "rb") as f:
    pem = ssl.DER_cert_to_PEM_cert(f.read())
with open(cert_pem, "w") as f:
    f.write(pem)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
# Keys are pinned by fingerprint, not by a CA (PROTOCOL.md 2.2).
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(cert_pem, key_pem)
ctx.set_alpn_protocols(["rsh/1"])
raw = socket.create_connection((host, int(port)), timeout=60)
s = ctx.wrap_socket(raw)
assert s.version() == "TLSv1.3", s.version()



s.sendall(b"RSH\x00\x00\x01\x00\x00")
hello = recv_exact(8)
assert hello[:4] == b"RSH\x00" and hello[4:6] == b"\x00\x01", hello

WINDOW = 256 * 1024
cmd = command.encode()
exec_payload = struct.pack(">IQI", WINDOW, 0, len(cmd)) + cmd + b"\x00" + struct.pack(">I", 0)
s.sendall(frame(0x01, 1, exec_payload))
if stdin_len == 0:
    s.sendall(frame(0x03, 1))
credit, sent, consumed = 0, 0, 0
digest, out_len, status = hashlib.sha256(), 0, None
while status is None:
    while credit > 0 and sent < stdin_len:
        n = min(credit, 256 * 1024, stdin_len - sent)
        s.sendall(frame(0x02, 1, b"y" * n))
        sent += n
        credit -= n
        if sent == stdin_len:
            s.sendall(frame(0x03, 1))
    (length,) = struct.unpack(">I", recv_exact(4))
    assert 5 <= length <= 1048576, length
    body = recv_exact(length)
    kind, (channel,), payload = body[0], struct.unpack(">I", body[1:5]), body[5:]
    assert channel == 1, (kind, channel)
    if kind == 0x05:
        credit += struct.unpack(">I", payload)[0]
    elif kind == 0x10:
        digest.update(payload)
        out_len += len(payload)
        consumed += len(payload)
        if consumed >= WINDOW // 4:
            s.sendall(frame(0x05, 1, struct.pack(">I", consumed)))
            consumed = 0
    elif kind == 0x11:
        sys.stderr.write(payload.decode(errors="replace"))
    elif kind == 0x12:
        status = "%d:%d" % (payload[0], struct.unpack(">i", payload[1:5])[0])
    else:
        raise SystemExit("unexpected frame %#x: %r" % (kind, payload[:80]))
s.close()
print("stdout=%d sha256=%s exit=%s" % (out_len, digest.hexdigest(), status))
"#;

#[test]
fn openssl_client_moves_megabytes_both_ways() {
    if !crate::util::tools_present(&["python3"]) {
        return;
    }
    let server = TestServer::start(Transport::Tls);
    let dest = &server.dest;
    let (host, port) = dest.rsplit_once(':').expect("host:port");
    let identity =
        rsh_tls::Identity::load(&server.client_home.path().join("id")).expect("the client's key");
    let cert_der = server.client_home.path().join("cert.der");
    std::fs::write(&cert_der, identity.cert_der().as_ref()).expect("write the certificate");
    let cert_pem = server.client_home.path().join("cert.pem");
    let key = server.client_home.path().join("key-v1.pem");
    std::fs::write(&key, pkcs8_v1_pem(&identity)).expect("write the key");
    // 2 MB in: `wc -c` counts them; then 3 MB out.
    let stdin_len = 2_000_000;
    let out_len = 3_000_000;
    let command = format!("wc -c | tr -d ' '; head -c {out_len} /dev/zero");
    let mut python = Command::new("python3");
    python
        .arg("-c")
        .arg(format!("{FRAMING}{CLIENT}"))
        .arg(host)
        .arg(port)
        .arg(&cert_der)
        .arg(&key)
        .arg(&cert_pem)
        .arg(stdin_len.to_string())
        .arg(&command);
    // Bounded: run_with_stdin waits at most WAIT.
    let out = crate::util::run_with_stdin(&mut python, b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}\n{}\nserver log:\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    let mut expected = format!("{stdin_len}\n").into_bytes();
    expected.resize(expected.len() + out_len, 0);
    let sha = sha256_hex(&expected);
    assert_eq!(
        stdout.trim(),
        format!("stdout={} sha256={sha} exit=0:0", expected.len())
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server: one connection; greeting, one Exec, the whole stdin (its
/// length and SHA-256 are the first output line), then `out_len` bytes of
/// 'z' under the client's output window, then Exit 0. Prints its port once
/// listening.
const SERVER: &str = r#"
import hashlib, socket, ssl, struct, sys
cert_der, key_pem, cert_pem, out_len = sys.argv[1:5]
out_len = int(out_len)
with open(cert_der, "rb") as f:
    pem = ssl.DER_cert_to_PEM_cert(f.read())
with open(cert_pem, "w") as f:
    f.write(pem)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert_pem, key_pem)
ctx.set_alpn_protocols(["rsh/1"])
listener = socket.create_server(("127.0.0.1", 0))
listener.settimeout(60)
print(listener.getsockname()[1], flush=True)
raw, _ = listener.accept()
raw.settimeout(60)
s = ctx.wrap_socket(raw, server_side=True)


def read_frame():
    (length,) = struct.unpack(">I", recv_exact(4))
    assert 5 <= length <= 1048576, length
    body = recv_exact(length)
    return body[0], struct.unpack(">I", body[1:5])[0], body[5:]


s.sendall(b"RSH\x00\x00\x01\x00\x00")
hello = recv_exact(8)
assert hello[:4] == b"RSH\x00", hello
kind, channel, payload = read_frame()
assert kind == 0x01, kind
(window,) = struct.unpack(">I", payload[:4])
s.sendall(frame(0x05, channel, struct.pack(">I", 1 << 20)))
digest, got = hashlib.sha256(), 0
while True:
    kind, _, payload = read_frame()
    if kind == 0x02:
        digest.update(payload)
        got += len(payload)
        if got % (1 << 20) < len(payload):
            s.sendall(frame(0x05, channel, struct.pack(">I", 1 << 20)))
    elif kind == 0x03:
        break
    elif kind == 0x05:
        window += struct.unpack(">I", payload)[0]
first = ("%d %s\n" % (got, digest.hexdigest())).encode()
s.sendall(frame(0x10, channel, first))
window -= len(first)
sent = 0
while sent < out_len:
    while window <= 0:
        kind, _, payload = read_frame()
        if kind == 0x05:
            window += struct.unpack(">I", payload)[0]
    n = min(window, 64 * 1024, out_len - sent)
    s.sendall(frame(0x10, channel, b"z" * n))
    sent += n
    window -= n
s.sendall(frame(0x12, channel, b"\x00" + struct.pack(">i", 0)))
# The client closes after the Exit.
try:
    while s.recv(65536):
        pass
except (ssl.SSLError, OSError):
    pass
print("served", flush=True)
"#;

#[test]
fn client_moves_megabytes_both_ways_with_an_openssl_server() {
    if !crate::util::tools_present(&["python3"]) {
        return;
    }
    use std::io::{BufRead, BufReader};
    let scratch = tempfile::tempdir().expect("temp dir");
    let home = scratch.path().join("client");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let host_key = rsh_tls::Identity::generate("openssl server").expect("a host key");
    let cert_der = scratch.path().join("cert.der");
    std::fs::write(&cert_der, host_key.cert_der().as_ref()).expect("write the certificate");
    let key = scratch.path().join("key.pem");
    std::fs::write(&key, pkcs8_v1_pem(&host_key)).expect("write the key");
    let out_len = 3_000_000;
    let mut server = Command::new("python3")
        .arg("-c")
        .arg(format!("{FRAMING}{SERVER}"))
        .arg(&cert_der)
        .arg(&key)
        .arg(scratch.path().join("cert.pem"))
        .arg(out_len.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    // Bounded: the script prints its port first, or exits.
    let port = lines
        .next()
        .and_then(Result::ok)
        .and_then(|line| line.trim().parse::<u16>().ok())
        .expect("the Python server's port");
    let dest = format!("127.0.0.1:{port}");
    std::fs::write(
        home.join("known_hosts"),
        format!("{dest} {}\n", host_key.fingerprint()),
    )
    .expect("known_hosts");
    let input = crate::util::random_bytes(2_000_000, 7);
    let mut client = Command::new(crate::util::client_bin());
    client.env("RSH_HOME", &home).args([&dest, "-c", "ignored"]);
    let out = crate::util::run_with_stdin(&mut client, &input);
    let status = crate::util::wait_child(&mut server, crate::util::WAIT);
    let mut server_err = String::new();
    if let Some(mut err) = server.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut server_err);
    }
    assert!(
        out.status.success(),
        "client: {:?} {}\nserver: {server_err}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status.map(|s| s.success()),
        Some(true),
        "server: {server_err}"
    );
    let first = format!("{} {}\n", input.len(), sha256_hex(&input));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout[..first.len().min(out.stdout.len())]),
        first
    );
    assert_eq!(out.stdout.len(), first.len() + out_len);
    assert!(out.stdout[first.len()..].iter().all(|&b| b == b'z'));
}

/// An Ed25519 key as a version-1 PKCS#8 PEM. Our key file holds
/// the version-2 form (with the public key, as ring writes it), which
/// OpenSSL 3.0 refuses to read ("unsupported"); version 1 is the same seed.
fn pkcs8_v1_pem(identity: &rsh_tls::Identity) -> String {
    use base64::Engine;
    let v2 = identity.private_key_der();
    let der = v2.secret_der();
    // The seed: the 32 bytes of the inner OCTET STRING (04 20) inside the
    // privateKey OCTET STRING (04 22).
    let at = der
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .expect("an Ed25519 PKCS#8 key")
        + 4;
    let seed = der.get(at..at + 32).expect("a 32-byte seed");
    let mut v1 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    v1.extend_from_slice(seed);
    let body = base64::engine::general_purpose::STANDARD.encode(v1);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}
