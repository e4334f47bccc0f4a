//! A loopback HTTP/1.1 proxy in front of moto that counts every AWS request
//! passing through it, by caller, service and operation, with the bytes of
//! its body (SQS and EventBridge bill each 64 KB of a request as one).
//!
//! Requests are forwarded byte for byte as they are read; responses are
//! copied back untouched, so whatever framing moto answers with works.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One counted request.
#[derive(Debug, Clone)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub body_bytes: usize,
    /// Entries of a batch call (`Entries`, `Records`), else 1.
    pub entries: usize,
}

/// A proxy for one caller (a function, or the event source).
pub struct CountingProxy {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl CountingProxy {
    /// Listens on a loopback port and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let (upstream, recorded) = (upstream.clone(), Arc::clone(&recorded));
                std::thread::spawn(move || forward(inbound, &upstream, &recorded));
            }
        });
        Self { url, calls }
    }

    /// Every request counted so far, and forgets them.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("not poisoned"))
    }

    /// Counts by (service, operation): requests, billed 64 KB units, entries.
    pub fn summary(calls: &[Call]) -> BTreeMap<(String, String), (usize, usize, usize)> {
        let mut summary = BTreeMap::new();
        for call in calls {
            let entry = summary.entry((call.service.clone(), call.operation.clone())).or_insert((0, 0, 0));
            entry.0 += 1;
            entry.1 += call.body_bytes.div_ceil(64 * 1024).max(1);
            entry.2 += call.entries;
        }
        summary
    }
}

fn forward(inbound: TcpStream, upstream: &str, calls: &Mutex<Vec<Call>>) {
    let Ok(mut outbound) = TcpStream::connect(upstream) else { return };
    let (Ok(mut back_from), Ok(mut back_to)) = (outbound.try_clone(), inbound.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_from, &mut back_to);
        let _ = back_to.shutdown(std::net::Shutdown::Both);
    });
    let mut reader = BufReader::new(inbound);
    while let Some(call) = relay_request(&mut reader, &mut outbound) {
        calls.lock().expect("not poisoned").push(call);
    }
    let _ = outbound.shutdown(std::net::Shutdown::Both);
}

/// Reads one request, writing it on to `out` as read; what it was.
fn relay_request(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> Option<Call> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    out.write_all(line.as_bytes()).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let (mut length, mut chunked, mut target) = (0usize, false, None);
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        out.write_all(line.as_bytes()).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            "x-amz-target" => target = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            out.write_all(line.as_bytes()).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).ok()?;
            out.write_all(&chunk).ok()?;
            body.extend(chunk);
            line.clear();
            reader.read_line(&mut line).ok()?;
            out.write_all(line.as_bytes()).ok()?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut chunk = vec![0; length];
        reader.read_exact(&mut chunk).ok()?;
        out.write_all(&chunk).ok()?;
        body = chunk;
    }
    let (service, operation) = identify(&method, target.as_deref());
    let entries = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| ["Entries", "Records"].iter().find_map(|k| v.get(*k).and_then(|e| e.as_array()).map(Vec::len)))
        .unwrap_or(1);
    Some(Call { service, operation, body_bytes: body.len(), entries })
}

/// The service and operation of a request: JSON-protocol calls name them in
/// `x-amz-target`; S3's REST calls by method.
fn identify(method: &str, target: Option<&str>) -> (String, String) {
    if let Some((prefix, operation)) = target.and_then(|t| t.split_once('.')) {
        let service = match prefix {
            "AmazonSQS" => "SQS",
            "DynamoDB_20120810" => "DynamoDB",
            "AWSEvents" => "EventBridge",
            "secretsmanager" => "SecretsManager",
            "Firehose_20150804" => "Firehose",
            other => other,
        };
        return (service.to_owned(), operation.to_owned());
    }
    let operation = match method {
        "PUT" => "PutObject",
        "GET" => "GetObject",
        "DELETE" => "DeleteObject",
        "HEAD" => "HeadObject",
        other => other,
    };
    ("S3".to_owned(), operation.to_owned())
}
