//! The properties of the cargo-fuzz targets (`fuzz/`), as proptests with
//! arbitrary bytes so that every `cargo test` keeps them (cargo-fuzz needs
//! nightly and runs apart): the replication wire decoder never panics, never
//! holds more than a frame and round-trips what it accepts; the config parser
//! never panics and whatever it accepts survives the TOML round trip that
//! `tandem up` puts it through (it writes the effective config for its
//! processes); the node's JSON body parser never panics and accepts objects
//! only. `PROPTEST_CASES` raises the case count for a long local run.

use proptest::prelude::*;
use tandem_config::{Config, EXAMPLE_TOML};
use tandem_engine::wire::{
    decode_message, encode_frame, encode_message, ForwardRequest, ForwardResponse, Frame,
    FrameDecoder,
};

const FRAME_MAX: usize = 64 * 1024;

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let again: T = decode_message(&encode_message(value), usize::MAX).expect("re-decodes");
    assert_eq!(&again, value);
}

/// A valid frame stream with a few bytes flipped and cut into chunks: closer
/// to the decoder's edge cases than uniformly random bytes.
fn frames_with_damage() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let frames = [
        Frame::Hello { sender: "eu-west".into(), sender_now_ms: 5, sender_last_seq: 9 },
        Frame::Heartbeat { sender_now_ms: 7, next_seq: 9, sender_last_seq: 9 },
        Frame::Batch { sender_now_ms: 6, next_seq: 3, sender_last_seq: 9, entries: Vec::new() },
    ];
    let bytes: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f).to_vec()).collect();
    let n = bytes.len();
    (proptest::collection::vec((0..n, any::<u8>()), 0..6), 1..64usize).prop_map(
        move |(flips, chunk)| {
            let mut b = bytes.clone();
            for (i, v) in flips {
                b[i] = v;
            }
            (b, chunk)
        },
    )
}

fn decode_stream(bytes: &[u8], chunk: usize) {
    let mut d = FrameDecoder::new(FRAME_MAX);
    for part in bytes.chunks(chunk.max(1)) {
        d.push(part);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => round_trip(&f),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(d.buffered() <= FRAME_MAX + 4 + chunk, "held {} bytes", d.buffered());
    }
}

/// The example config with lines dropped, duplicated or edited: mostly
/// invalid documents that are nearly right.
fn mangled_config() -> impl Strategy<Value = String> {
    let lines: Vec<String> = EXAMPLE_TOML.lines().map(str::to_owned).collect();
    let n = lines.len();
    let edits = proptest::collection::vec((0..n, 0..4u8, "[ -~]{0,12}"), 0..6);
    edits.prop_map(move |edits| {
        let mut out = lines.clone();
        for (i, kind, text) in edits {
            let i = i % out.len().max(1);
            match kind {
                0 => {
                    out.remove(i);
                }
                1 => {
                    let l = out[i].clone();
                    out.insert(i, l);
                }
                2 => out[i] = text,
                _ => {
                    if let Some((k, _)) = out[i].clone().split_once('=') {
                        out[i] = format!("{k}= {text}");
                    }
                }
            }
            if out.is_empty() {
                break;
            }
        }
        out.join("\n")
    })
}

fn config_round_trip(text: &str) {
    if let Ok(config) = Config::from_toml_str(text) {
        let written = toml::to_string(&config).expect("serializes");
        let reread = Config::from_toml_str(&written)
            .unwrap_or_else(|e| panic!("an accepted config must re-read: {e}\n{written}"));
        assert_eq!(reread, config);
    }
}

/// 512 cases per property in CI; `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn wire_decoder_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1..300usize) {
        decode_stream(&bytes, chunk);
        if let Ok(f) = decode_message::<Frame>(&bytes, FRAME_MAX) { round_trip(&f) }
        if let Ok(r) = decode_message::<ForwardRequest>(&bytes, FRAME_MAX) { round_trip(&r) }
        if let Ok(r) = decode_message::<ForwardResponse>(&bytes, FRAME_MAX) { round_trip(&r) }
    }

    #[test]
    fn wire_decoder_survives_damaged_frames((bytes, chunk) in frames_with_damage()) {
        decode_stream(&bytes, chunk);
    }

    #[test]
    fn config_parser_survives_any_text(text in "\\PC{0,400}") {
        config_round_trip(&text);
    }

    #[test]
    fn config_parser_survives_mangled_examples(text in mangled_config()) {
        config_round_trip(&text);
    }

    #[test]
    fn json_bodies_are_objects_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(v) = tandem_node::validate::parse_json::<serde_json::Value>(&bytes) {
            prop_assert!(v.is_object());
        }
    }
}

#[test]
fn the_example_config_survives_the_round_trip() {
    config_round_trip(EXAMPLE_TOML);
    Config::from_toml_str(EXAMPLE_TOML).expect("the example parses");
}
