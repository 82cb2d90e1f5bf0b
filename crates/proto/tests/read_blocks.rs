//! The decoder's recycled read blocks (`Codec::with_read_block`): streams of
//! big and small frames decode byte for byte however the reads are cut and
//! however long the decoded frames stay alive, and a stream of big frames
//! reuses a bounded set of blocks once its frames are dropped.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rsh_proto::{Codec, Frame};
use std::collections::VecDeque;
use tokio_util::codec::{Decoder, Encoder};

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    for frame in frames {
        codec.encode(frame, &mut buf).expect("frame fits");
    }
    buf.to_vec()
}

/// Data frames from a few bytes to a full 256 KiB chunk, each filled with a
/// pattern that tells its bytes apart from any other frame's.
fn data_frames() -> impl Strategy<Value = Vec<Frame>> {
    let size = prop_oneof![
        1usize..64,
        1usize..20_000,
        16_000usize..=rsh_proto::MAX_DATA_LEN
    ];
    proptest::collection::vec((size, any::<u8>(), 0u8..3), 1..24).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(index, (len, seed, kind))| {
                let data: Bytes = (0..len)
                    .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)) ^ index as u8)
                    .collect();
                let channel = index as u32 + 1;
                match kind {
                    0 => Frame::Stdout { channel, data },
                    1 => Frame::Stderr { channel, data },
                    _ => Frame::Stdin { channel, data },
                }
            })
            .collect()
    })
}

/// Feeds `bytes` to the codec as a reader would (reads of `cuts` sizes in
/// turn, into the buffer's spare room), keeping up to `keep` decoded frames
/// alive before dropping the oldest, as a writer that lags behind does.
fn decode_in_reads(codec: &mut Codec, bytes: &[u8], cuts: &[usize], keep: usize) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut alive = VecDeque::new();
    let mut got = Vec::new();
    let mut at = 0;
    let mut turn = 0;
    while at < bytes.len() {
        let cut = cuts[turn % cuts.len()].clamp(1, bytes.len() - at);
        turn += 1;
        buf.extend_from_slice(&bytes[at..at + cut]);
        at += cut;
        while let Some(frame) = codec.decode(&mut buf).expect("valid stream") {
            got.push(frame.clone());
            alive.push_back(frame);
            if alive.len() > keep {
                alive.pop_front();
            }
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    got
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the block size, the read sizes and how long frames live,
    /// the frames come out exactly as they went in.
    #[test]
    fn frames_decode_byte_exact_through_recycled_blocks(
        frames in data_frames(),
        cuts in proptest::collection::vec(1usize..300_000, 1..8),
        block in prop_oneof![Just(64 * 1024), Just(300_000usize), Just(1024 * 1024)],
        keep in 0usize..6,
    ) {
        let bytes = wire(&frames);
        let mut codec = Codec::new().with_read_block(block);
        let got = decode_in_reads(&mut codec, &bytes, &cuts, keep);
        prop_assert_eq!(got, frames);
    }
}

/// A long stream of full-size frames, read in 64 KiB pieces and dropped a
/// few frames later, lives in a handful of blocks: the read buffer's start
/// keeps coming back to the same few allocations.
#[test]
fn a_stream_of_big_frames_reuses_a_few_blocks() {
    let data = Bytes::from(vec![0xa5; rsh_proto::MAX_DATA_LEN]);
    let frame = Frame::Stdout { channel: 1, data };
    let one = wire(std::slice::from_ref(&frame));
    let mut codec = Codec::new().with_read_block(4 * rsh_proto::MAX_DATA_LEN);
    let mut buf = BytesMut::new();
    let mut alive = VecDeque::new();
    let mut blocks: Vec<usize> = Vec::new();
    let mut decoded = 0;
    for _ in 0..200 {
        for piece in one.chunks(64 * 1024) {
            buf.extend_from_slice(piece);
            while let Some(got) = codec.decode(&mut buf).expect("valid stream") {
                assert_eq!(got, frame);
                decoded += 1;
                alive.push_back(got);
                if alive.len() > 8 {
                    alive.pop_front();
                }
            }
            if buf.capacity() >= rsh_proto::MAX_DATA_LEN {
                let start = buf.as_ptr() as usize;
                if !blocks.iter().any(|&block| {
                    (block..block + 4 * rsh_proto::MAX_DATA_LEN + 64).contains(&start)
                }) {
                    blocks.push(start);
                }
            }
        }
    }
    assert_eq!(decoded, 200);
    // 8 frames alive (2 MiB) need 3 blocks; one filling, one spare.
    assert!(
        blocks.len() <= 6,
        "{} distinct read blocks for 200 frames",
        blocks.len()
    );
}

/// Once bulk data is over and small frames follow, the decoder lets its
/// blocks go: the read buffer is small again.
#[test]
fn blocks_are_let_go_when_small_frames_follow_bulk_data() {
    let big = Frame::Stdin {
        channel: 1,
        data: Bytes::from(vec![7; rsh_proto::MAX_DATA_LEN]),
    };
    let small = Frame::WindowAdjust {
        channel: 1,
        increment: 4096,
    };
    let mut codec = Codec::new().with_read_block(4 * (rsh_proto::MAX_DATA_LEN + 64));
    let mut buf = BytesMut::new();
    let mut feed = |bytes: &[u8], buf: &mut BytesMut| {
        let mut got = 0;
        for piece in bytes.chunks(64 * 1024) {
            buf.extend_from_slice(piece);
            while codec.decode(buf).expect("valid stream").is_some() {
                got += 1;
            }
        }
        got
    };
    let bulk = wire(&vec![big; 8]);
    assert_eq!(feed(&bulk, &mut buf), 8);
    assert!(
        buf.capacity() >= rsh_proto::MAX_DATA_LEN,
        "bulk data is read into a block"
    );
    let mut decoded = 0;
    for _ in 0..100 {
        decoded += feed(&wire(std::slice::from_ref(&small)), &mut buf);
    }
    assert_eq!(decoded, 100);
    assert!(
        buf.capacity() < 64 * 1024,
        "read buffer still holds {} bytes after the bulk data",
        buf.capacity()
    );
}
