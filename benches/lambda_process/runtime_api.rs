//! An emulator of the Lambda Runtime API on loopback: hands out queued events
//! on `next` and records when each poll and each answer arrived.

use crate::http1::{read_request, respond};
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "/2018-06-01/runtime";
/// A poll that waits longer than this for an event gives up, so a forgotten
/// function process cannot keep a server thread forever.
const POLL_LIMIT: Duration = Duration::from_secs(120);

/// What the function sent back for one invocation, or for its init.
#[derive(Debug)]
pub struct Answer {
    pub at: Instant,
    pub kind: AnswerKind,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    Response,
    InvocationError,
    InitError,
}

/// One emulated Runtime API endpoint, for one function process.
pub struct RuntimeApi {
    pub address: String,
    events: Sender<Vec<u8>>,
    polls: Receiver<Instant>,
    answers: Receiver<Answer>,
}

struct Shared {
    events: Mutex<Receiver<Vec<u8>>>,
    polls: Sender<Instant>,
    answers: Sender<Answer>,
}

impl RuntimeApi {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("bound").to_string();
        let (events, events_rx) = channel();
        let (polls_tx, polls) = channel();
        let (answers_tx, answers) = channel();
        let shared = Arc::new(Shared { events: Mutex::new(events_rx), polls: polls_tx, answers: answers_tx });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self { address, events, polls, answers }
    }

    /// Queues an event for the next `next` poll.
    pub fn queue(&self, event: Vec<u8>) {
        self.events.send(event).expect("the server is running");
    }

    /// When the next poll arrived; `None` after `limit`.
    pub fn poll(&self, limit: Duration) -> Option<Instant> {
        self.polls.recv_timeout(limit).ok()
    }

    /// The next answer; `None` after `limit`.
    pub fn answer(&self, limit: Duration) -> Option<Answer> {
        self.answers.recv_timeout(limit).ok()
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut serial = 0u64;
    while let Some(request) = read_request(&mut reader) {
        let written = match (request.method.as_str(), request.path.strip_prefix(PREFIX)) {
            ("GET", Some("/invocation/next")) => {
                let _ = shared.polls.send(Instant::now());
                let event = shared.events.lock().expect("not poisoned").recv_timeout(POLL_LIMIT);
                match event {
                    Ok(event) => {
                        serial += 1;
                        invocation(&mut writer, serial, &event)
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
                }
            }
            ("POST", Some(path)) => {
                let kind = answer_kind(path);
                let _ = shared.answers.send(Answer { at: Instant::now(), kind, body: request.body });
                respond(&mut writer, 202, &[("content-type", "application/json")], br#"{"status":"OK"}"#)
            }
            _ => respond(&mut writer, 404, &[], b""),
        };
        if written.is_err() {
            return;
        }
    }
}

fn answer_kind(path: &str) -> AnswerKind {
    if path == "/init/error" {
        AnswerKind::InitError
    } else if path.ends_with("/error") {
        AnswerKind::InvocationError
    } else {
        AnswerKind::Response
    }
}

fn invocation(writer: &mut TcpStream, serial: u64, event: &[u8]) -> std::io::Result<()> {
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970") + Duration::from_secs(30);
    let request_id = format!("00000000-0000-4000-8000-{serial:012}");
    let deadline = deadline.as_millis().to_string();
    let headers = [
        ("content-type", "application/json"),
        ("lambda-runtime-aws-request-id", request_id.as_str()),
        ("lambda-runtime-deadline-ms", deadline.as_str()),
        ("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:bench"),
        ("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
    ];
    respond(writer, 200, &headers, event)
}
