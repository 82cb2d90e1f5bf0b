//! Golden vectors, round trips and hostile input for the frame codec.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use rsh_proto::{
    Codec, CodecError, ErrorKind, Exec, ExitStatus, Frame, FrameType, PtyRequest, PtySize,
    MAX_FRAME_LEN,
};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

/// Encodes with the newest version's codec.
fn encode(frame: &Frame) -> Vec<u8> {
    encode_v(frame, rsh_proto::VERSION)
}

fn encode_v(frame: &Frame, version: u16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Codec::new()
        .with_version(version)
        .encode(frame, &mut buf)
        .expect("frame fits");
    buf.to_vec()
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, CodecError> {
    decode_all_v(bytes, rsh_proto::VERSION)
}

fn decode_all_v(bytes: &[u8], version: u16) -> Result<Vec<Frame>, CodecError> {
    let mut codec = Codec::new().with_version(version);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Version 1's vectors (docs/PROTOCOL.md section 5). Every frame but Exec
/// is the same in version 2.
#[test]
fn golden_vectors() {
    let cases: Vec<(Frame, &[u8])> = vec![
        (
            Frame::Exec(Exec {
                channel: 1,
                window: 0x0001_0000,
                command: b"ls".to_vec(),
                cwd: Some(b"/t".to_vec()),
                env: vec![(b"A".to_vec(), b"b".to_vec())],
                timeout: Some(Duration::from_millis(1500)),
                ..Exec::default()
            }),
            b"\x00\x00\x00\x2c\x01\x00\x00\x00\x01\
              \x00\x01\x00\x00\
              \x00\x00\x00\x00\x00\x00\x05\xdc\
              \x00\x00\x00\x02ls\
              \x01\x00\x00\x00\x02/t\
              \x00\x00\x00\x01\
              \x00\x00\x00\x01A\x00\x00\x00\x01b",
        ),
        (
            Frame::Stdin {
                channel: 2,
                data: Bytes::from_static(b"hi"),
            },
            b"\x00\x00\x00\x07\x02\x00\x00\x00\x02hi",
        ),
        (
            Frame::StdinEnd { channel: 2 },
            b"\x00\x00\x00\x05\x03\x00\x00\x00\x02",
        ),
        (
            Frame::Signal {
                channel: 3,
                signal: 2,
            },
            b"\x00\x00\x00\x06\x04\x00\x00\x00\x03\x02",
        ),
        (
            Frame::WindowAdjust {
                channel: 3,
                increment: 65536,
            },
            b"\x00\x00\x00\x09\x05\x00\x00\x00\x03\x00\x01\x00\x00",
        ),
        (
            Frame::Stdout {
                channel: 1,
                data: Bytes::from_static(b"\xff\x00"),
            },
            b"\x00\x00\x00\x07\x10\x00\x00\x00\x01\xff\x00",
        ),
        (
            Frame::Stderr {
                channel: 1,
                data: Bytes::new(),
            },
            b"\x00\x00\x00\x05\x11\x00\x00\x00\x01",
        ),
        (
            Frame::Exit {
                channel: 1,
                status: ExitStatus::Code(7),
            },
            b"\x00\x00\x00\x0a\x12\x00\x00\x00\x01\x00\x00\x00\x00\x07",
        ),
        (
            Frame::Exit {
                channel: 1,
                status: ExitStatus::Signal(9),
            },
            b"\x00\x00\x00\x07\x12\x00\x00\x00\x01\x01\x09",
        ),
        (
            Frame::Exit {
                channel: 1,
                status: ExitStatus::TimedOut,
            },
            b"\x00\x00\x00\x06\x12\x00\x00\x00\x01\x02",
        ),
        (
            Frame::Exit {
                channel: 1,
                status: ExitStatus::FailedToStart("no sh".into()),
            },
            b"\x00\x00\x00\x0b\x12\x00\x00\x00\x01\x03no sh",
        ),
        (
            Frame::Error {
                channel: 0,
                kind: ErrorKind::BadRequest,
                message: "empty".into(),
            },
            b"\x00\x00\x00\x0c\x13\x00\x00\x00\x00\x00\x01empty",
        ),
    ];
    for (frame, wire) in cases {
        assert_eq!(encode_v(&frame, 1), wire, "encoding {frame:?}");
        assert_eq!(
            decode_all_v(wire, 1).expect("golden decodes"),
            vec![frame.clone()]
        );
        if !matches!(frame, Frame::Exec(_)) {
            assert_eq!(
                encode_v(&frame, 2),
                wire,
                "version 2 encodes {frame:?} alike"
            );
            assert_eq!(decode_all_v(wire, 2).expect("golden decodes"), vec![frame]);
        }
    }
}

/// Version 2's new and changed frames (docs/PROTOCOL.md section 5).
#[test]
fn golden_vectors_v2() {
    let cases: Vec<(Frame, &[u8])> = vec![
        (
            // A plain command: the v1 fields, then mode 0, no user, no pty.
            Frame::Exec(Exec {
                channel: 1,
                window: 0x0001_0000,
                command: b"ls".to_vec(),
                ..Exec::default()
            }),
            b"\x00\x00\x00\x1f\x01\x00\x00\x00\x01\
              \x00\x01\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x02ls\
              \x00\
              \x00\x00\x00\x00\
              \x00\
              \x00\
              \x00",
        ),
        (
            // The login shell of user "al" on an 80x24 xterm of 800x480 pixels.
            Frame::Exec(Exec {
                channel: 2,
                window: 0x0001_0000,
                login_shell: true,
                user: Some(b"al".to_vec()),
                pty: Some(PtyRequest {
                    term: b"xterm".to_vec(),
                    size: PtySize {
                        cols: 80,
                        rows: 24,
                        pixel_width: 800,
                        pixel_height: 480,
                    },
                }),
                ..Exec::default()
            }),
            b"\x00\x00\x00\x34\x01\x00\x00\x00\x02\
              \x00\x01\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\
              \x00\
              \x00\x00\x00\x00\
              \x01\
              \x01\x00\x00\x00\x02al\
              \x01\x00\x00\x00\x05xterm\x00\x50\x00\x18\x03\x20\x01\xe0",
        ),
        (
            Frame::Resize {
                channel: 2,
                size: PtySize {
                    cols: 100,
                    rows: 30,
                    pixel_width: 0,
                    pixel_height: 0,
                },
            },
            b"\x00\x00\x00\x0d\x06\x00\x00\x00\x02\x00\x64\x00\x1e\x00\x00\x00\x00",
        ),
        (
            Frame::Unknown {
                channel: 0,
                frame_type: 0x80,
                payload: Bytes::from_static(b"x"),
            },
            b"\x00\x00\x00\x06\x80\x00\x00\x00\x00x",
        ),
        (
            Frame::Error {
                channel: 1,
                kind: ErrorKind::WrongUser,
                message: "no".into(),
            },
            b"\x00\x00\x00\x09\x13\x00\x00\x00\x01\x00\x07no",
        ),
        (
            Frame::Error {
                channel: 1,
                kind: ErrorKind::Unsupported,
                message: "no".into(),
            },
            b"\x00\x00\x00\x09\x13\x00\x00\x00\x01\x00\x08no",
        ),
    ];
    for (frame, wire) in cases {
        assert_eq!(encode_v(&frame, 2), wire, "encoding {frame:?}");
        assert_eq!(decode_all_v(wire, 2).expect("golden decodes"), vec![frame]);
    }
}

/// Version 3's Ping and Pong (docs/PROTOCOL.md section 5.11): channel 0,
/// an 8-byte cookie; and its shutdown notice (section 10).
#[test]
fn golden_vectors_v3() {
    let cases: Vec<(Frame, &[u8])> = vec![
        (
            Frame::Ping {
                cookie: 0x0102_0304_0506_0708,
            },
            b"\x00\x00\x00\x0d\x20\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08",
        ),
        (
            Frame::Pong {
                cookie: 0xfedc_ba98_7654_3210,
            },
            b"\x00\x00\x00\x0d\x21\x00\x00\x00\x00\xfe\xdc\xba\x98\x76\x54\x32\x10",
        ),
        // The server's shutdown notice (sections 5.10 and 10): an Error
        // frame as in every version, which only version 3 sends.
        (
            Frame::Error {
                channel: 0,
                kind: ErrorKind::ShuttingDown,
                message: "server shutting down".into(),
            },
            b"\x00\x00\x00\x1b\x13\x00\x00\x00\x00\x00\x04server shutting down",
        ),
    ];
    for (frame, wire) in cases {
        assert_eq!(frame.channel(), 0);
        assert_eq!(encode_v(&frame, 3), wire, "encoding {frame:?}");
        assert_eq!(decode_all_v(wire, 3).expect("golden decodes"), vec![frame]);
    }
}

#[test]
fn ping_and_pong_exist_from_version_3_only_on_channel_0() {
    let ping = b"\x00\x00\x00\x0d\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01";
    let pong = b"\x00\x00\x00\x0d\x21\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01";
    // Below the extension range: as fatal to a version-1 or -2 receiver as
    // any unknown type, which is why only a version-3 peer is ever sent one.
    for version in [1, 2] {
        assert!(matches!(
            decode_all_v(ping, version),
            Err(CodecError::UnknownType(0x20))
        ));
        assert!(matches!(
            decode_all_v(pong, version),
            Err(CodecError::UnknownType(0x21))
        ));
        let mut buf = BytesMut::new();
        for frame in [Frame::Ping { cookie: 1 }, Frame::Pong { cookie: 1 }] {
            assert!(matches!(
                Codec::new().with_version(version).encode(&frame, &mut buf),
                Err(CodecError::NotInVersion { needs: 3, .. })
            ));
        }
        assert!(buf.is_empty());
    }
    // On a command channel, or with a short or long body: malformed.
    for bad in [
        &b"\x00\x00\x00\x0d\x20\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01"[..],
        b"\x00\x00\x00\x0c\x21\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x00\x00\x00\x0e\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00",
    ] {
        assert!(
            matches!(decode_all_v(bad, 3), Err(CodecError::Malformed { .. })),
            "{bad:?}"
        );
    }
}

/// docs/PROTOCOL.md section 11: the reference client's `echo hi` Exec in
/// both versions, so the worked example cannot drift from the codec.
#[test]
fn worked_example_exec_in_both_versions() {
    let exec = Frame::Exec(Exec {
        channel: 1,
        window: 2 * 1024 * 1024,
        command: b"echo hi".to_vec(),
        ..Exec::default()
    });
    let v1: &[u8] = b"\x00\x00\x00\x21\x01\x00\x00\x00\x01\x00\x20\x00\x00\
        \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07echo hi\x00\x00\x00\x00\x00";
    let v2: &[u8] = b"\x00\x00\x00\x24\x01\x00\x00\x00\x01\x00\x20\x00\x00\
        \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07echo hi\x00\x00\x00\x00\x00\
        \x00\x00\x00";
    assert_eq!(encode_v(&exec, 1), v1);
    assert_eq!(encode_v(&exec, 2), v2);
    // Version 3 leaves the Exec as version 2 has it.
    assert_eq!(encode_v(&exec, 3), v2);
}

#[test]
fn version_2_frames_do_not_exist_in_version_1() {
    // A v1 receiver knows neither Resize nor the extension range: fatal, as
    // any unknown type is in version 1.
    let resize = b"\x00\x00\x00\x0d\x06\x00\x00\x00\x02\x00\x64\x00\x1e\x00\x00\x00\x00";
    assert!(matches!(
        decode_all_v(resize, 1),
        Err(CodecError::UnknownType(0x06))
    ));
    assert!(matches!(
        decode_all_v(b"\x00\x00\x00\x06\x80\x00\x00\x00\x00x", 1),
        Err(CodecError::UnknownType(0x80))
    ));
    // And a v1 sender cannot send them, nor an Exec with v2 options.
    let mut codec = Codec::new().with_version(1);
    let mut buf = BytesMut::new();
    let v2_exec = Frame::Exec(Exec {
        channel: 1,
        user: Some(b"bob".to_vec()),
        ..Exec::default()
    });
    for frame in [
        v2_exec,
        Frame::Resize {
            channel: 1,
            size: PtySize::default(),
        },
    ] {
        assert!(matches!(
            codec.encode(&frame, &mut buf),
            Err(CodecError::NotInVersion {
                needs: 2,
                version: 1,
                ..
            })
        ));
    }
    assert!(buf.is_empty());
}

#[test]
fn version_2_skips_the_extension_range_only() {
    // An extension frame between two known frames: the receiver gets it as
    // Unknown (to skip) and goes on.
    let wire = b"\x00\x00\x00\x05\x03\x00\x00\x00\x02\
                 \x00\x00\x00\x08\xfe\x00\x00\x00\x02abc\
                 \x00\x00\x00\x05\x03\x00\x00\x00\x03";
    let frames = decode_all_v(wire, 2).expect("extension frames are skippable");
    assert_eq!(frames.len(), 3);
    assert!(matches!(
        frames[1],
        Frame::Unknown {
            frame_type: 0xfe,
            ..
        }
    ));
    assert_eq!(frames[2], Frame::StdinEnd { channel: 3 });
    // Below the range an unknown type is still fatal.
    assert!(matches!(
        decode_all_v(b"\x00\x00\x00\x05\x7f\x00\x00\x00\x01", 2),
        Err(CodecError::UnknownType(0x7f))
    ));
    // Nobody can send an "unknown" frame outside the range.
    let bad = Frame::Unknown {
        channel: 1,
        frame_type: 0x07,
        payload: Bytes::new(),
    };
    assert!(matches!(
        Codec::new().encode(&bad, &mut BytesMut::new()),
        Err(CodecError::UnknownType(0x07))
    ));
    assert_eq!(bad.frame_type(), FrameType::Extension);
}

#[test]
fn malformed_version_2_exec_is_refused() {
    // A v1-layout Exec on a v2 connection ends early.
    let v1_exec = encode_v(
        &Frame::Exec(Exec {
            channel: 1,
            command: b"ls".to_vec(),
            ..Exec::default()
        }),
        1,
    );
    assert!(matches!(
        decode_all_v(&v1_exec, 2),
        Err(CodecError::Malformed { .. })
    ));
    // Mode 2 does not exist.
    let mut wire = encode_v(
        &Frame::Exec(Exec {
            channel: 1,
            command: b"ls".to_vec(),
            ..Exec::default()
        }),
        2,
    );
    let mode_at = wire.len() - 3;
    wire[mode_at] = 2;
    assert!(matches!(
        decode_all_v(&wire, 2),
        Err(CodecError::Malformed { .. })
    ));
    // A Resize one byte short.
    assert!(matches!(
        decode_all_v(
            b"\x00\x00\x00\x0c\x06\x00\x00\x00\x02\x00\x64\x00\x1e\x00\x00\x00",
            2
        ),
        Err(CodecError::Malformed { .. })
    ));
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    buf.put_u8(0x10);
    let err = Codec::new().decode(&mut buf).expect_err("must refuse");
    assert!(
        matches!(err, CodecError::FrameTooLarge { len, max } if len == u32::MAX as usize && max == MAX_FRAME_LEN)
    );
    assert!(
        buf.capacity() < 1024,
        "no allocation for the announced size"
    );
}

#[test]
fn limit_is_inclusive() {
    let data = Bytes::from(vec![0u8; MAX_FRAME_LEN - 5]);
    let frame = Frame::Stdout { channel: 1, data };
    let wire = encode(&frame);
    assert_eq!(decode_all(&wire).expect("at the limit"), vec![frame]);
    let too_big = Frame::Stdout {
        channel: 1,
        data: Bytes::from(vec![0u8; MAX_FRAME_LEN - 4]),
    };
    let mut buf = BytesMut::new();
    assert!(matches!(
        Codec::new().encode(&too_big, &mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
    assert!(buf.is_empty(), "a refused frame leaves nothing behind");
}

#[test]
fn specific_garbage_is_refused() {
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x02\x10\x00"),
        Err(CodecError::FrameTooShort(2))
    ));
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x05\x7f\x00\x00\x00\x01"),
        Err(CodecError::UnknownType(0x7f))
    ));
    // WindowAdjust with a 3-byte increment.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x08\x05\x00\x00\x00\x01\x00\x00\x01"),
        Err(CodecError::Malformed { .. })
    ));
    // StdinEnd with a trailing byte.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x06\x03\x00\x00\x00\x01\x00"),
        Err(CodecError::Malformed { .. })
    ));
    // Exec whose command length points past the end.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x15\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"),
        Err(CodecError::Malformed { .. })
    ));
    // Error text that is not UTF-8.
    assert!(matches!(
        decode_all(b"\x00\x00\x00\x08\x13\x00\x00\x00\x00\x00\x01\xff"),
        Err(CodecError::Malformed { .. })
    ));
}

fn bytes_strategy(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn size_strategy() -> impl Strategy<Value = PtySize> + Clone {
    (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
        |(cols, rows, pixel_width, pixel_height)| PtySize {
            cols,
            rows,
            pixel_width,
            pixel_height,
        },
    )
}

/// Every frame of the newest version, including its new ones.
fn frame_strategy() -> impl Strategy<Value = Frame> {
    let v2_exec = (
        v1_exec_strategy(),
        any::<bool>(),
        proptest::option::of(bytes_strategy(16)),
        proptest::option::of((bytes_strategy(16), size_strategy())),
    )
        .prop_map(|(exec, login_shell, user, pty)| {
            let Frame::Exec(mut exec) = exec else {
                unreachable!("the v1 strategy makes an Exec")
            };
            exec.login_shell = login_shell;
            exec.user = user;
            exec.pty = pty.map(|(term, size)| PtyRequest { term, size });
            Frame::Exec(exec)
        });
    let resize =
        (any::<u32>(), size_strategy()).prop_map(|(channel, size)| Frame::Resize { channel, size });
    let unknown = (any::<u32>(), 0x80u8..=0xff, bytes_strategy(40)).prop_map(
        |(channel, frame_type, payload)| Frame::Unknown {
            channel,
            frame_type,
            payload: Bytes::from(payload),
        },
    );
    let ping = any::<u64>().prop_map(|cookie| Frame::Ping { cookie });
    let pong = any::<u64>().prop_map(|cookie| Frame::Pong { cookie });
    prop_oneof![
        4 => v1_frame_strategy(),
        1 => v2_exec,
        1 => resize,
        1 => unknown,
        1 => ping,
        1 => pong,
    ]
}

fn v1_exec_strategy() -> impl Strategy<Value = Frame> {
    (
        any::<u32>(),
        any::<u32>(),
        bytes_strategy(64),
        proptest::option::of(bytes_strategy(32)),
        proptest::collection::vec((bytes_strategy(16), bytes_strategy(16)), 0..4),
        proptest::option::of(1u64..u64::MAX / 2),
    )
        .prop_map(|(channel, window, command, cwd, env, timeout)| {
            Frame::Exec(Exec {
                channel,
                window,
                command,
                cwd,
                env,
                timeout: timeout.map(Duration::from_millis),
                ..Exec::default()
            })
        })
}

/// Every frame version 1 has.
fn v1_frame_strategy() -> impl Strategy<Value = Frame> {
    let exec = v1_exec_strategy();
    let status = prop_oneof![
        any::<i32>().prop_map(ExitStatus::Code),
        any::<u8>().prop_map(ExitStatus::Signal),
        Just(ExitStatus::TimedOut),
        ".{0,40}".prop_map(ExitStatus::FailedToStart),
    ];
    let data = bytes_strategy(300).prop_map(Bytes::from);
    prop_oneof![
        exec,
        (any::<u32>(), data.clone()).prop_map(|(channel, data)| Frame::Stdin { channel, data }),
        any::<u32>().prop_map(|channel| Frame::StdinEnd { channel }),
        (any::<u32>(), any::<u8>()).prop_map(|(channel, signal)| Frame::Signal { channel, signal }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(channel, increment)| Frame::WindowAdjust { channel, increment }),
        (any::<u32>(), data.clone()).prop_map(|(channel, data)| Frame::Stdout { channel, data }),
        (any::<u32>(), data).prop_map(|(channel, data)| Frame::Stderr { channel, data }),
        (any::<u32>(), status).prop_map(|(channel, status)| Frame::Exit { channel, status }),
        (any::<u32>(), any::<u16>(), ".{0,40}").prop_map(|(channel, code, message)| {
            Frame::Error {
                channel,
                kind: ErrorKind::from_code(code),
                message,
            }
        }),
    ]
}

proptest! {
    /// Only Exec changed layout: every other version-1 frame is the same
    /// bytes in version 2.
    #[test]
    fn v1_frames_but_exec_are_unchanged_in_v2(frame in v1_frame_strategy()) {
        if !matches!(frame, Frame::Exec(_)) {
            prop_assert_eq!(encode_v(&frame, 1), encode_v(&frame, 2));
        }
    }

    #[test]
    fn round_trip_v1(frames in proptest::collection::vec(v1_frame_strategy(), 1..8)) {
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&encode_v(frame, 1));
        }
        prop_assert_eq!(decode_all_v(&wire, 1).expect("valid stream"), frames);
    }

    #[test]
    fn round_trip(frames in proptest::collection::vec(frame_strategy(), 1..8)) {
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&encode(frame));
        }
        prop_assert_eq!(decode_all(&wire).expect("valid stream"), frames);
    }

    #[test]
    fn byte_at_a_time_matches_whole(frame in frame_strategy()) {
        let wire = encode(&frame);
        let mut codec = Codec::new();
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let decoded = codec.decode(&mut buf).expect("valid prefix");
            if i + 1 < wire.len() {
                prop_assert!(decoded.is_none(), "no frame before the last byte");
            } else {
                got = decoded;
            }
        }
        prop_assert_eq!(got, Some(frame));
    }

    #[test]
    fn truncated_input_is_incomplete_never_a_frame(frame in frame_strategy(), cut in 0usize..1000) {
        let wire = encode(&frame);
        let cut = cut % wire.len();
        let mut buf = BytesMut::from(&wire[..cut]);
        prop_assert!(Codec::new().decode(&mut buf).expect("a valid prefix is not an error").is_none());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut codec = Codec::with_max_frame_len(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        // Bounded: every Ok(Some) consumes at least 9 bytes.
        for _ in 0..bytes.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn oversized_headers_always_refused(len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX, tail in bytes_strategy(16)) {
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        buf.put_slice(&tail);
        let is_too_large = matches!(Codec::new().decode(&mut buf), Err(CodecError::FrameTooLarge { .. }));
        prop_assert!(is_too_large);
    }
}

proptest! {
    /// A vectored encoding is the plain encoding, split in two.
    #[test]
    fn vectored_encoding_matches(frame in frame_strategy(), copy_below in 0usize..400) {
        let mut head = BytesMut::new();
        let payload = Codec::new().encode_vectored(frame.clone(), &mut head, copy_below).expect("fits");
        let mut joined = head.to_vec();
        if let Some(payload) = payload {
            prop_assert!(payload.len() >= copy_below);
            joined.extend_from_slice(&payload);
        }
        prop_assert_eq!(joined, encode(&frame));
    }
}

proptest! {
    /// A read block only changes how the buffer grows, never what decodes.
    #[test]
    fn read_block_decodes_the_same(frames in proptest::collection::vec(frame_strategy(), 1..6), split in 1usize..64) {
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&encode(frame));
        }
        let mut codec = Codec::new().with_read_block(4096);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut buf).expect("valid stream") {
                got.push(frame);
            }
        }
        prop_assert_eq!(got, frames);
    }
}
