//! Any bytes as one request frame (after its size prefix): the header and, for Produce,
//! the body decode or fail with an error, never a panic or a huge allocation.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runnel_protocol::kp::messages::{ApiKey, ProduceRequest};
use runnel_protocol::{decode_body, parse_request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    if req.api_key == ApiKey::Produce {
        let _ = decode_body::<ProduceRequest>(&req.body, req.api_version);
    }
});
