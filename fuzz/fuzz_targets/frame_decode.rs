//! The frame decoder, fed anything.
//!
//! Properties, beyond "no panic":
//! * split anywhere: the input decoded in two pieces (the first byte of the
//!   fuzz data picks where it is cut) gives the same frames, and the same
//!   error, as decoded whole: a peer's TCP segmentation never changes what
//!   is received;
//! * decode → encode: the frames decoded before any error re-encode to
//!   exactly the bytes they came from, so the encoding is canonical and no
//!   byte of a frame is silently ignored.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rsh_proto::{Codec, Frame};
use tokio_util::codec::{Decoder, Encoder};

/// The frames decoded from `chunks` fed one after the other, and the first
/// error (as text), if any.
fn decode_chunks(chunks: &[&[u8]]) -> (Vec<Frame>, Option<String>) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                // After an error the connection is closed: stop here.
                Err(err) => return (frames, Some(err.to_string())),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = decode_chunks(&[input]);

    let at = usize::from(cut) * input.len() / 255;
    let (head, tail) = input.split_at(at.min(input.len()));
    let split = decode_chunks(&[head, tail]);
    assert_eq!(whole, split, "cut at {at} changed what was decoded");

    // One byte at a time, the worst segmentation, on short inputs.
    if input.len() <= 64 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(whole, decode_chunks(&bytes), "byte-at-a-time differs");
    }

    let mut codec = Codec::new();
    let mut encoded = BytesMut::new();
    for frame in &whole.0 {
        codec
            .encode(frame, &mut encoded)
            .expect("a decoded frame encodes");
    }
    assert!(
        input.starts_with(&encoded),
        "re-encoding the decoded frames does not give the input back"
    );
});
