//! A loopback AWS that answers at once: SQS `SendMessage` (the ingest
//! queue) and Secrets Manager `GetSecretValue` (the signing secret), so the
//! processes are measured without a real service's latency.

use crate::http1::{read_request, respond};
use std::io::BufReader;
use std::net::TcpListener;

/// Starts the stub serving `secret`; returns its endpoint URL. It serves until the bench exits.
pub fn start(secret: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("a socket clones");
                let mut reader = BufReader::new(stream);
                let mut serial = 0u64;
                while let Some(request) = read_request(&mut reader) {
                    serial += 1;
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
