//! A corpus of bad and tricky requests against `nectar-webhooks serve`, sent
//! as raw bytes so nothing normalises them on the way. Each gets its expected
//! status; the server's whole log is then checked for the secret and for a
//! marker planted in every body.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::config::LAMBDA_BODY_LIMIT;
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "whsec_aG9zdGlsZS1pbnB1dC10ZXN0LXNlY3JldC0xMjM0NQ==";
const MARKER: &str = "BODY-MARKER-5b1e7c";

struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn post(body: Vec<u8>) -> Self {
        Self { method: "POST", path: "/webhooks/nectar".into(), headers: Vec::new(), body }
    }

    fn signed(id: &str, timestamp: i64, body: Vec<u8>) -> Self {
        let mut request = Self::post(body);
        let headers = svix_headers(SECRET, id, timestamp, &request.body);
        request.headers = headers.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        request
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| n != name);
        self
    }

    fn replace(self, name: &str, value: &str) -> Self {
        self.without(name).header(name, value)
    }

    /// Sends over a fresh connection; returns the status code.
    fn send(&self, port: u16) -> u16 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = format!("{} {} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n", self.method, self.path);
        if !self.headers.iter().any(|(n, _)| n == "content-type") {
            head.push_str("content-type: application/json\r\n");
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        stream.write_all(head.as_bytes()).unwrap();
        // The server may answer and close before reading an oversize body.
        let _ = stream.write_all(&self.body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response);
        record_response(response.split_once("\r\n\r\n").map_or("", |(_, body)| body));
        response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
    }
}

fn body(extra: &str) -> Vec<u8> {
    format!(r#"{{"eventType":"document.created.v2","id":"d-1","note":"{MARKER}","x":"{extra}"}}"#).into_bytes()
}

#[test]
fn every_hostile_request_gets_its_status_and_nothing_sensitive_is_logged() {
    let out = std::env::temp_dir().join(unique_name("hostile")).with_extension("jsonl");
    let logs = std::env::temp_dir().join(unique_name("hostile-log")).with_extension("log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_nectar-webhooks"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .env("WEBHOOK_SECRET", SECRET)
        .env("ROUTES", format!("*=file:{}", out.display()))
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&logs).unwrap())
        .stderr(std::fs::File::options().append(true).open(&logs).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let now = now();
    let deep = "[".repeat(100_000);
    let replayed = Request::signed("msg_replayed", now, body("replayed"));
    let ten_thousand_entries = format!("{} v1,AAAA", "v1,AAAA ".repeat(10_000).trim_end());
    let corpus: Vec<(&str, Request, u16)> = vec![
        ("valid", Request::signed("msg_valid", now, body("valid")), 202),
        ("no body, unsigned", Request::post(Vec::new()), 400),
        ("empty body, signed", Request::signed("msg_empty", now, Vec::new()), 202),
        ("no headers at all", Request::post(body("unsigned")), 400),
        (
            "a 16 KiB signature header",
            Request::signed("msg_h", now, body("h")).replace("svix-signature", &"A".repeat(16 * 1024)),
            400,
        ),
        (
            "10,000 signature entries",
            Request::signed("msg_e", now, body("e")).replace("svix-signature", &ten_thousand_entries),
            401,
        ),
        (
            "invalid UTF-8, signed",
            Request::signed("msg_utf8", now, [b"\xff\xfe".as_slice(), MARKER.as_bytes()].concat()),
            202,
        ),
        (
            "invalid UTF-8, badly signed",
            Request::signed("msg_utf8b", now, b"\xff".to_vec())
                .replace("svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            401,
        ),
        ("not JSON, signed", Request::signed("msg_text", now, format!("plain text {MARKER}").into_bytes()), 202),
        (
            "deeply nested JSON, signed",
            Request::signed("msg_deep", now, format!("{deep}\"{MARKER}\"").into_bytes()),
            202,
        ),
        (
            "text/plain content type, signed",
            Request::signed("msg_ct", now, body("ct")).replace("content-type", "text/plain"),
            202,
        ),
        (
            "form content type, unsigned",
            Request::post(body("form")).header("content-type", "application/x-www-form-urlencoded"),
            400,
        ),
        ("duplicate svix-id", Request::signed("msg_dup", now, body("dup")).header("svix-id", "msg_other"), 400),
        (
            "duplicate svix-signature",
            Request::signed("msg_dup2", now, body("dup2")).header("svix-signature", "v1,AAAA"),
            400,
        ),
        ("timestamp 301 s old (a replay after 5 minutes)", Request::signed("msg_old", now - 301, body("old")), 401),
        ("timestamp 301 s ahead", Request::signed("msg_future", now + 301, body("future")), 401),
        ("timestamp not a number", Request::signed("msg_ts", now, body("ts")).replace("svix-timestamp", "1e9"), 400),
        ("negative timestamp", Request::signed("msg_neg", now, body("neg")).replace("svix-timestamp", "-1"), 400),
        (
            "overflowing timestamp",
            Request::signed("msg_ovf", now, body("ovf")).replace("svix-timestamp", "99999999999999999999999"),
            400,
        ),
        ("empty signature v1,", Request::signed("msg_sig", now, body("sig")).replace("svix-signature", "v1,"), 401),
        (
            "unknown signature version only",
            Request::signed("msg_v9", now, body("v9")).replace("svix-signature", "v9,abc"),
            400,
        ),
        ("replay within 5 minutes: first", replayed, 202),
        ("replay within 5 minutes: again", Request::signed("msg_replayed", now, body("replayed")), 202),
        (
            "path with ..",
            Request { path: "/webhooks/nectar/../nectar".into(), ..Request::signed("msg_p1", now, body("p1")) },
            404,
        ),
        (
            "path with //",
            Request { path: "/webhooks//nectar".into(), ..Request::signed("msg_p2", now, body("p2")) },
            404,
        ),
        (
            "path in capitals",
            Request { path: "/WEBHOOKS/NECTAR".into(), ..Request::signed("msg_p3", now, body("p3")) },
            404,
        ),
        (
            "encoded slash",
            Request { path: "/webhooks/nectar%2F..".into(), ..Request::signed("msg_p4", now, body("p4")) },
            404,
        ),
        (
            "unknown source",
            Request { path: "/webhooks/stripe".into(), ..Request::signed("msg_p5", now, body("p5")) },
            404,
        ),
        ("root path", Request { path: "/".into(), ..Request::signed("msg_p6", now, body("p6")) }, 404),
        (
            "trailing slash and query",
            Request { path: "/webhooks/nectar/?a=b".into(), ..Request::signed("msg_p7", now, body("p7")) },
            202,
        ),
        ("GET", Request { method: "GET", ..Request::post(Vec::new()) }, 405),
        ("PUT, signed", Request { method: "PUT", ..Request::signed("msg_put", now, body("put")) }, 405),
        ("DELETE", Request { method: "DELETE", ..Request::post(Vec::new()) }, 405),
        ("PATCH", Request { method: "PATCH", ..Request::post(body("patch")) }, 405),
        ("OPTIONS", Request { method: "OPTIONS", ..Request::post(Vec::new()) }, 405),
        // Local mode, like the Lambda, takes what a Lambda invocation can carry.
        ("body over the limit", Request::signed("msg_big", now, vec![b'a'; LAMBDA_BODY_LIMIT + 1]), 413),
    ];

    let mut wrong = Vec::new();
    for (name, request, expected) in &corpus {
        let got = request.send(port);
        if got != *expected {
            wrong.push(format!("{name}: expected {expected}, got {got}"));
        }
    }
    // Everything accepted is routed before the server stops.
    let accepted: Vec<&str> =
        vec!["msg_valid", "msg_empty", "msg_utf8", "msg_text", "msg_deep", "msg_ct", "msg_replayed", "msg_p7"];
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered: Vec<Value> = loop {
        let lines = json_lines(&out);
        if lines.len() >= accepted.len() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let mut ids: Vec<&str> = delivered.iter().map(|line| line["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected_ids = accepted.clone();
    expected_ids.sort();
    assert_eq!(ids, expected_ids, "each accepted webhook delivered once; the replay within 5 minutes too");

    let log = std::fs::read_to_string(&logs).unwrap();
    assert!(!log.contains(SECRET) && !log.contains(SECRET.trim_start_matches("whsec_")), "the secret reached the log");
    assert!(!log.contains(MARKER), "a body reached the log");
    let rejections = log.lines().filter(|line| line.contains("webhook rejected")).count();
    let refused = corpus.iter().filter(|(_, _, status)| *status != 202).count();
    assert_eq!(rejections, refused, "one log line per refusal, naming the cause:\n{log}");
    for reason in [
        "missing_header",
        "duplicate_header",
        "timestamp_too_old",
        "signature_mismatch",
        "method_not_allowed",
        "unknown_source",
        "body_too_large",
    ] {
        assert!(log.contains(reason), "no log line names {reason}");
    }
    println!(
        "hostile input: {} requests, {} refused with their status, {} delivered once",
        corpus.len(),
        refused,
        ids.len()
    );
}
