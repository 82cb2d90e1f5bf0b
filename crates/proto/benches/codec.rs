//! Encode and decode of Stdout data frames, the bulk of every transfer.
//!
//! `cargo bench -p rsh-proto` (criterion; throughput in payload bytes).
//!
//! - `encode`: one frame into a reused buffer (header + payload copy).
//! - `decode`: one frame out of a buffer holding exactly it (no copy: the
//!   payload is a slice of the buffer).
//! - `decode_stream`: 16 frames arriving in 64 KiB reads appended to the
//!   read buffer, as `FramedRead` does: includes the copy of each read into
//!   the buffer and the buffer's growth for frames that straddle reads.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rsh_proto::{Codec, Frame};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

const SIZES: [(usize, &str); 2] = [(16 * 1024, "16KiB"), (64 * 1024, "64KiB")];
/// Bytes per read in `decode_stream`.
const READ: usize = 64 * 1024;
/// Frames per `decode_stream` iteration.
const STREAM_FRAMES: usize = 16;

fn stdout_frame(size: usize) -> Frame {
    Frame::Stdout {
        channel: 1,
        data: Bytes::from(vec![0x5a; size]),
    }
}

fn encoded(frame: &Frame, copies: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for _ in 0..copies {
        if Codec::new().encode(frame, &mut buf).is_err() {
            panic!("a data frame within the limit encodes");
        }
    }
    buf.to_vec()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (size, name) in SIZES {
        let frame = stdout_frame(size);
        let mut codec = Codec::new();
        let mut buf = BytesMut::with_capacity(size + 64);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                let result = codec.encode(black_box(&frame), &mut buf);
                black_box((result.is_ok(), buf.len()))
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (size, name) in SIZES {
        let wire = encoded(&stdout_frame(size), 1);
        let mut codec = Codec::new();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(codec.decode(buf).ok().flatten()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn decode_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_stream");
    for (size, name) in SIZES {
        let wire = encoded(&stdout_frame(size), STREAM_FRAMES);
        let mut codec = Codec::new();
        group.throughput(Throughput::Bytes((size * STREAM_FRAMES) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::with_capacity(8 * 1024);
                let mut frames = 0;
                for read in wire.chunks(READ) {
                    buf.extend_from_slice(read);
                    while let Ok(Some(frame)) = codec.decode(&mut buf) {
                        black_box(&frame);
                        frames += 1;
                    }
                }
                assert_eq!(frames, STREAM_FRAMES);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode, decode_stream);
criterion_main!(benches);
