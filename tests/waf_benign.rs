//! Benign Vietnamese citizen traffic (tests/data/waf-benign/requests.jsonl): every request body
//! must parse cleanly with the WAF body processors (no REQBODY_ERROR, no multipart strict error),
//! so benign form posts, JSON API calls and uploads never reach the rules as body errors.

use cong::waf::body::{processor, Kind, Limits};

#[test]
fn benign_bodies_parse_without_errors() {
    let text = std::fs::read_to_string("tests/data/waf-benign/requests.jsonl")
        .expect("read tests/data/waf-benign/requests.jsonl");
    let limits = Limits {
        inspect_bytes: 128 * 1024,
        max_args: 1000,
        max_json_depth: 64,
    };
    let mut bodies = 0;
    for (n, line) in text.lines().enumerate() {
        let req: serde_json::Value = serde_json::from_str(line).expect("corpus line is JSON");
        let Some(body) = req["body"].as_str() else {
            continue;
        };
        let ct = req["headers"]["Content-Type"].as_str().unwrap_or("");
        let kind = Kind::for_content_type(ct).expect("corpus body has a known content type");
        let mut p = processor(kind, ct, limits);
        p.feed(body.as_bytes());
        let parsed = p.finish();
        assert!(parsed.error.is_none(), "line {}: {:?}", n + 1, parsed.error);
        assert!(!parsed.args.is_empty(), "line {}: no arguments", n + 1);
        bodies += 1;
    }
    assert_eq!(bodies, 130);
}
