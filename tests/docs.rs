//! The documentation as a newcomer runs it: every command in a fenced `sh`
//! block of README.md and docs/operations.md runs exactly as written
//! (`nectar-webhooks` is the binary under test, first on `PATH`) and
//! succeeds, unless [`SKIPPED`] names why it cannot run here. A command
//! added to the docs is therefore either run or listed.

#![cfg(feature = "adapters")]

mod support;

use nectar_webhooks::core::routing::RouteTable;
use std::path::Path;
use std::process::Command;
use support::*;

const DOCUMENTS: [&str; 2] = ["README.md", "docs/operations.md"];

/// Commands that cannot run offline, by how they start, and why.
const SKIPPED: &[(&str, &str)] = &[
    ("make ", "make targets build, deploy or run the whole test suite, this test included"),
    ("aws ", "needs AWS credentials and a deployed stack"),
    ("INGEST=$(aws ", "needs a deployed stack"),
    ("DLQ=$(out ", "needs a deployed stack"),
    ("id=$(aws ", "needs a deployed stack"),
    ("sleep 5; aws ", "needs a deployed stack"),
    ("nectar-webhooks redrive --dlq \"$DLQ\"", "needs a deployed stack's dead-letter queue"),
    ("nectar-webhooks replay --from s3://", "needs a deployed stack's archive"),
    ("sam ", "needs Docker"),
    ("cargo lambda ", "needs cargo-lambda and its emulator"),
    (".venv/bin/moto_server ", "starts a server in the background; tests/support runs moto"),
];

/// Where the docs' commands expect a local `serve`; the test starts one on a
/// free port (with the secret the docs' commands set) before the first
/// command that names it, and puts its address in their place.
const LOCAL_SERVE: &str = "127.0.0.1:3000";

/// The commands of each fenced `sh` block: continuation lines joined, a
/// quoted string over several lines kept whole, comments and blank lines left
/// out, the indentation of list items removed.
fn blocks(document: &str) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(project_dir().join(document)).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    let mut pending = String::new();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(language) = trimmed.strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None if language == "sh" => current = Some((format!("{document}:{}", number + 1), Vec::new())),
                None => current = Some((String::new(), Vec::new())),
            }
            continue;
        }
        let Some((place, commands)) = current.as_mut() else { continue };
        if place.is_empty() || (pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#'))) {
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(trimmed);
        let open_quote = ends_inside_single_quotes(&pending);
        if let Some(joined) = pending.strip_suffix('\\') {
            pending = joined.to_owned();
        } else if !open_quote {
            commands.push(std::mem::take(&mut pending));
        }
    }
    blocks.retain(|(place, _)| !place.is_empty());
    blocks
}

/// Whether `text` leaves a single-quoted string open, as far as the shell
/// sees it: quotes in a comment (`# the binaries' glibc`) do not count.
fn ends_inside_single_quotes(text: &str) -> bool {
    let (mut single, mut double, mut after_blank) = (false, false, true);
    for line in text.split('\n') {
        for c in line.chars() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '#' if !single && !double && after_blank => break,
                _ => {}
            }
            after_blank = c.is_whitespace();
        }
        after_blank = true;
    }
    single
}

fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn every_offline_command_in_the_docs_runs_as_written() {
    let binary = Path::new(env!("CARGO_BIN_EXE_nectar-webhooks"));
    let path = format!("{}:{}", binary.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let routes_out = std::env::temp_dir().join(unique_name("doc-routes"));
    let (mut ran, mut routes_checked) = (0, 0);
    let mut skips_used = vec![false; SKIPPED.len()];
    for document in DOCUMENTS {
        for (place, commands) in blocks(document) {
            let serve = free_address();
            let (host, port) = serve.split_once(':').unwrap();
            let mut script = String::from("set -e\n");
            let mut serving = false;
            for command in &commands {
                if let Some(index) = SKIPPED.iter().position(|(start, _)| command.starts_with(start)) {
                    skips_used[index] = true;
                    continue;
                }
                if command.contains(LOCAL_SERVE) && !serving {
                    script.push_str(&format!(
                        "nectar-webhooks serve --addr {serve} >/dev/null & SERVE=$!; trap 'kill $SERVE' EXIT\n\
                         until (echo >/dev/tcp/{host}/{port}) 2>/dev/null; do kill -0 $SERVE; sleep 0.05; done\n"
                    ));
                    serving = true;
                }
                let command = command.replace(LOCAL_SERVE, &serve);
                script.push_str(&command);
                script.push('\n');
                if command.starts_with("ROUTES=") {
                    script.push_str(&format!("printf '%s\\0' \"$ROUTES\" >> {}\n", routes_out.display()));
                }
                ran += 1;
            }
            let output = Command::new("bash")
                .arg("-c")
                .arg(&script)
                .current_dir(project_dir())
                .env("PATH", &path)
                .env("DATA_DIR", std::env::temp_dir().join(unique_name("docs-data")))
                .env_remove("WEBHOOK_SECRET")
                .env_remove("ROUTES")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{place}: the block fails as written:\n{script}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    // Route tables assigned in the docs parse as written (serving them
    // needs their queues and buses).
    let tables = std::fs::read_to_string(&routes_out).unwrap_or_default();
    std::fs::remove_file(&routes_out).ok();
    for table in tables.split('\0').filter(|t| !t.is_empty()) {
        RouteTable::parse(table).unwrap_or_else(|err| panic!("ROUTES example {table:?}: {err}"));
        routes_checked += 1;
    }
    assert!(ran >= 5 && routes_checked >= 2, "ran {ran} commands, checked {routes_checked} route tables");
    for ((start, why), used) in SKIPPED.iter().zip(skips_used) {
        assert!(used, "SKIPPED lists {start:?} ({why}), which no document has any more");
    }
}
