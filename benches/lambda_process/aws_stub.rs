//! A loopback AWS that answers at once: SQS `SendMessage` (the ingest
//! queue), Secrets Manager `GetSecretValue` (the signing secret) and S3
//! `GetObject` (claim-checked payloads), so the processes are measured
//! without a real service's latency.

use crate::http1::{read_request, respond};
use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::Arc;

/// Starts the stub serving `secret`, and `objects` by path (`/bucket/key`,
/// as a client addressing an IP endpoint asks for them); returns its
/// endpoint URL. It serves until the bench exits.
pub fn start(secret: &'static str, objects: HashMap<String, Vec<u8>>) -> String {
    let objects = Arc::new(objects);
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let objects = Arc::clone(&objects);
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("a socket clones");
                let mut reader = BufReader::new(stream);
                let mut serial = 0u64;
                while let Some(request) = read_request(&mut reader) {
                    serial += 1;
                    if request.method == "GET" {
                        let path = request.path.split('?').next().unwrap_or_default();
                        let (status, body) = objects.get(path).map_or((404, &[][..]), |body| (200, body.as_slice()));
                        let headers = [("content-type", "application/octet-stream"), ("x-amz-request-id", "stub")];
                        if respond(&mut writer, status, &headers, body).is_err() {
                            break;
                        }
                        continue;
                    }
                    let (content_type, body) = match request.target.as_deref() {
                        Some("secretsmanager.GetSecretValue") => (
                            "application/x-amz-json-1.1",
                            format!(
                                r#"{{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:bench","Name":"bench","SecretString":"{secret}","VersionId":"v{serial}"}}"#
                            ),
                        ),
                        _ => (
                            "application/x-amz-json-1.0",
                            format!(
                                r#"{{"MessageId":"stub-{serial}","MD5OfMessageBody":"00000000000000000000000000000000"}}"#
                            ),
                        ),
                    };
                    let headers = [("content-type", content_type), ("x-amzn-requestid", "stub")];
                    if respond(&mut writer, 200, &headers, body.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    endpoint
}
