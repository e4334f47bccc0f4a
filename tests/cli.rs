//! The command-line tool as a newcomer meets it: every refusal names the
//! setting at fault and its fix, exits non-zero, and shows no panic or
//! backtrace.

#![cfg(feature = "adapters")]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use support::*;

const CLI: &str = env!("CARGO_BIN_EXE_nectar-webhooks");

/// An exited command's code and stderr.
struct Refusal {
    code: Option<i32>,
    stderr: String,
}

impl Refusal {
    /// A plain refusal: exit code 1 or 2, no panic, no backtrace, no SDK
    /// dump, and no colour codes (stderr is a pipe here).
    fn assert_plain(&self) -> &Self {
        assert!(matches!(self.code, Some(1 | 2)), "exit {:?}: {}", self.code, self.stderr);
        for tell in ["panicked", "backtrace", "RUST_BACKTRACE", "ServiceError {", "raw: Response", "\x1b["] {
            assert!(!self.stderr.contains(tell), "{tell:?} in: {}", self.stderr);
        }
        self
    }

    fn assert_says(&self, words: &[&str]) -> &Self {
        for word in words {
            assert!(self.stderr.contains(word), "{word:?} not in: {}", self.stderr);
        }
        self
    }
}

/// `nectar-webhooks` with no AWS credentials from anywhere and no
/// instance metadata to wait for.
fn cli() -> Command {
    command(CLI)
}

/// `binary` with no AWS credentials from anywhere and no instance metadata
/// to wait for.
fn command(binary: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("QUEUE_URL")
        .env_remove("ROUTES")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .env("DATA_DIR", std::env::temp_dir().join(unique_name("cli-data")))
        .stdin(Stdio::null());
    command
}

/// Runs `serve` on a free port, which must refuse to start: fails the test
/// (and stops the server) if it logs `listening` instead.
fn serve_refuses(configure: impl FnOnce(&mut Command) -> &mut Command) -> Refusal {
    let mut serve = cli();
    serve.args(["serve", "--addr", "127.0.0.1:0"]).env("WEBHOOK_SECRET", SAMPLE_SECRET);
    configure(&mut serve);
    refuses_to_listen(serve)
}

/// Runs a `serve` command that must exit before it listens: fails the test
/// (and stops the server) if it logs `listening` instead.
fn refuses_to_listen(mut serve: Command) -> Refusal {
    let mut child = serve.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("listening") {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("serve started although it should not have: {stderr}{line}");
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    Refusal { code: child.wait().unwrap().code(), stderr }
}

#[test]
fn serve_refuses_a_file_destination_it_cannot_open() {
    serve_refuses(|serve| serve.env("ROUTES", "*=file:/proc/nope/all.jsonl")).assert_plain().assert_says(&[
        "ROUTES",
        "rule \"*=file:/proc/nope/all.jsonl\"",
        "cannot be opened for append",
        "create its directory",
    ]);
}

#[test]
fn serve_refuses_an_unregistered_handler_before_listening() {
    serve_refuses(|serve| serve.env("ROUTES", "document.*=handler:nobody;*=stdout")).assert_plain().assert_says(&[
        "rule \"document.*=handler:nobody\"",
        "names no registered handler",
        "with_handler",
    ]);
}

#[test]
fn serve_refuses_an_sqs_destination_without_credentials() {
    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/docs";
    serve_refuses(|serve| serve.env("ROUTES", format!("*={queue}")).env("AWS_ENDPOINT_URL", "http://127.0.0.1:9"))
        .assert_plain()
        .assert_says(&[&format!("rule \"*={queue}\""), "no AWS credentials", "AWS_ACCESS_KEY_ID"]);
}

#[test]
fn serve_refuses_a_queue_destination_that_does_not_exist() {
    let missing = format!("{}/123456789012/{}", moto_endpoint(), unique_name("missing"));
    serve_refuses(|serve| {
        serve
            .env("ROUTES", format!("*={missing}"))
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
    })
    .assert_plain()
    .assert_says(&[&format!("rule \"*={missing}\""), "GetQueueAttributes failed", "check the name or URL"]);
}

/// `serve 2> serve.err`: plain text in files and pipes, colour only on a terminal.
#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    let mut serve = cli();
    serve.args(["serve", "--addr", "127.0.0.1:0"]).env("WEBHOOK_SECRET", SAMPLE_SECRET).env_remove("NO_COLOR");
    let mut child = serve.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines.map(Result::unwrap).find(|line| line.contains("listening"));
    child.kill().unwrap();
    child.wait().unwrap();
    let listening = listening.expect("serve logs `listening`");
    assert!(!listening.contains('\x1b'), "{listening:?}");
    assert!(listening.contains(" INFO "), "{listening:?}");
}

/// Runs `binary` with `args` through [`command`]'s clean environment.
fn run(binary: &str, args: &[&str], configure: impl FnOnce(&mut Command) -> &mut Command) -> std::process::Output {
    let mut command = command(binary);
    command.args(args);
    configure(&mut command).output().unwrap()
}

fn refusal(output: &std::process::Output) -> Refusal {
    Refusal { code: output.status.code(), stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
}

#[test]
fn the_lambda_bootstraps_explain_themselves_outside_lambda() {
    for binary in [env!("CARGO_BIN_EXE_ingest"), env!("CARGO_BIN_EXE_router")] {
        let bare = run(binary, &[], |c| c.env_remove("AWS_LAMBDA_RUNTIME_API"));
        let bare = refusal(&bare);
        assert_eq!(bare.code, Some(2), "{}", bare.stderr);
        bare.assert_plain().assert_says(&["Usage:", "Lambda", "AWS_LAMBDA_RUNTIME_API", "nectar-webhooks serve"]);
        assert_eq!(bare.stderr.lines().count(), 1, "{}", bare.stderr);
        for help in ["--help", "-h"] {
            let output = run(binary, &[help], |c| c.env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"));
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(output.status.code(), Some(0), "{stdout}");
            assert!(stdout.starts_with("Usage:") && stdout.contains("nectar-webhooks serve"), "{stdout}");
        }
    }
}

#[test]
fn a_bootstrap_s_configuration_error_prints_as_a_sentence() {
    let output = run(env!("CARGO_BIN_EXE_ingest"), &[], |c| {
        c.env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9").env_remove("WEBHOOK_SECRET").env_remove("WEBHOOK_SECRET_ARN")
    });
    let refused = refusal(&output);
    refused.assert_plain().assert_says(&["ingest: WEBHOOK_SECRET is not set"]);
    assert!(!refused.stderr.contains("Missing("), "{}", refused.stderr);
}

const PAYLOAD: &str = "events/payloads/document.created.v2.json";

fn sign(configure: impl FnOnce(&mut Command) -> &mut Command) -> std::process::Output {
    let mut sign = cli();
    sign.current_dir(project_dir()).args(["sign", "--timestamp", "1700000000", PAYLOAD]).env_remove("WEBHOOK_SECRET");
    configure(&mut sign).output().unwrap()
}

fn signature_line(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().find_map(|line| line.strip_prefix("svix-signature: ")).unwrap_or_default().to_owned()
}

#[test]
fn sign_takes_the_secret_from_the_environment_a_file_or_stdin_and_warns_on_the_command_line() {
    let from_env = sign(|c| c.env("WEBHOOK_SECRET", SAMPLE_SECRET));
    assert!(from_env.status.success() && from_env.stderr.is_empty(), "{}", refusal(&from_env).stderr);
    let expected = signature_line(&from_env);
    assert!(expected.starts_with("v1,"), "{expected}");

    let file = std::env::temp_dir().join(unique_name("secret"));
    std::fs::write(&file, format!("{SAMPLE_SECRET}\n")).unwrap();
    let from_file = sign(|c| c.arg("--secret-file").arg(&file));
    std::fs::remove_file(&file).unwrap();
    assert_eq!(signature_line(&from_file), expected);

    let mut from_stdin = cli();
    from_stdin.current_dir(project_dir()).env_remove("WEBHOOK_SECRET");
    from_stdin.args(["sign", "--timestamp", "1700000000", "--secret-file", "-", PAYLOAD]).stdin(Stdio::piped());
    let mut child = from_stdin.stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), SAMPLE_SECRET.as_bytes()).unwrap();
    assert_eq!(signature_line(&child.wait_with_output().unwrap()), expected);

    let on_the_command_line = sign(|c| c.args(["--secret", SAMPLE_SECRET]));
    assert_eq!(signature_line(&on_the_command_line), expected);
    let warning = refusal(&on_the_command_line).stderr;
    assert!(warning.contains("process listings") && warning.contains("WEBHOOK_SECRET"), "{warning}");
}

#[test]
fn sign_with_the_rotation_form_signs_once_per_secret() {
    let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let single = |secret: &str| signature_line(&sign(|c| c.env("WEBHOOK_SECRET", secret)));
    let both = signature_line(&sign(|c| c.env("WEBHOOK_SECRET", format!("{SAMPLE_SECRET} {other}"))));
    assert_eq!(both, format!("{} {}", single(SAMPLE_SECRET), single(other)));
}

#[test]
fn signing_secrets_that_cannot_sign_are_explained() {
    let private = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==";
    refusal(&sign(|c| c.env("WEBHOOK_SECRET", private)))
        .assert_plain()
        .assert_says(&["WEBHOOK_SECRET: entry 1", "signing needs the endpoint's symmetric secret (whsec_"]);
    refusal(&sign(|c| c)).assert_plain().assert_says(&[
        "set WEBHOOK_SECRET",
        "Svix portal",
        "nectar-webhooks secret",
        "--secret-file",
    ]);
}

#[test]
fn a_routes_file_error_names_the_file_the_line_and_the_rule() {
    let file = std::env::temp_dir().join(unique_name("routes")).with_extension("txt");
    std::fs::write(&file, "# documents; then the rest\ndocument.*=stdout # mine; yours\n\n*[a=b]=stdout]\n").unwrap();
    let refused = serve_refuses(|serve| serve.arg("--routes").arg(&file));
    std::fs::remove_file(&file).unwrap();
    refused
        .assert_plain()
        .assert_says(&[&format!("--routes {}: line 4: rule \"*[a=b]=stdout]\"", file.display()), "unbalanced `[` `]`"]);
    serve_refuses(|serve| serve.env("ROUTES", "document.*=stdout; *=kafka:all"))
        .assert_plain()
        .assert_says(&["ROUTES: line 1: rule \"*=kafka:all\": unknown destination \"kafka:all\"", "eventbridge:BUS"]);
}

fn send(args: &[&str]) -> std::process::Output {
    let mut send = cli();
    send.current_dir(project_dir()).arg("send").args(args).env("WEBHOOK_SECRET", SAMPLE_SECRET);
    send.output().unwrap()
}

#[test]
fn send_shows_the_cause_goes_on_and_ends_with_a_summary() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/webhooks/nectar");
    let output = send(&["--url", &url, PAYLOAD, "events/payloads/document.updated.v2.json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    refusal(&output).assert_plain();
    assert_eq!(stdout.lines().filter(|line| line.starts_with("ERR ")).count(), 2, "{stdout}");
    assert!(stdout.to_lowercase().contains("connection refused"), "{stdout}");
    assert!(stdout.ends_with("sent 2, 2xx 0, failed 2\n"), "{stdout}");
}

#[test]
fn send_checks_its_url_and_every_file_before_sending() {
    for url in ["127.0.0.1:3000/webhooks/nectar", "localhost:3000/webhooks/nectar"] {
        refusal(&send(&["--url", url, PAYLOAD]))
            .assert_plain()
            .assert_says(&["--url", "http://127.0.0.1:3000/webhooks/nectar"]);
    }
    let output = send(&["--url", "http://127.0.0.1:9/webhooks/nectar", "nope-1.json", PAYLOAD, "nope-2.json"]);
    assert!(output.stdout.is_empty(), "nothing was sent");
    refusal(&output).assert_plain().assert_says(&["nothing sent", "nope-1.json", "nope-2.json"]);
}

/// Every subcommand as clap declares it, and clap's own `help`.
fn subcommands() -> Vec<String> {
    let cli = <nectar_webhooks::cli::Cli as clap::CommandFactory>::command();
    let mut names: Vec<String> = cli.get_subcommands().map(|command| command.get_name().to_owned()).collect();
    for documented in ["serve", "send", "sign", "secret", "redrive"] {
        assert!(names.iter().any(|name| name == documented), "{documented} not in {names:?}");
    }
    names.push("help".to_owned());
    names
}

fn assert_no_panic(output: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    for tell in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(tell), "{tell:?} in: {stderr}");
    }
}

#[test]
fn every_command_answers_help_and_no_arguments_with_usage_and_no_panic() {
    let bootstraps = [env!("CARGO_BIN_EXE_ingest"), env!("CARGO_BIN_EXE_router")];
    let mut commands: Vec<(&str, Vec<String>)> = vec![(CLI, vec![])];
    commands.extend(subcommands().into_iter().map(|name| (CLI, vec![name])));
    commands.extend(bootstraps.iter().map(|binary| (*binary, vec![])));
    for (binary, args) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut help_args = args.clone();
        // clap's `help` takes no `--help`; it explains itself as `help help`.
        help_args.push(if args == ["help"] { "help" } else { "--help" });
        let help = run(binary, &help_args, |c| c);
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert_eq!(help.status.code(), Some(0), "{binary} {help_args:?}: {}", refusal(&help).stderr);
        assert!(stdout.contains("Usage:"), "{binary} {help_args:?}: {stdout}");
        assert_no_panic(&help);

        // `serve` must refuse here: nothing sets WEBHOOK_SECRET.
        let bare = if args == ["serve"] {
            let mut serve = command(binary);
            serve.args(&args).env_remove("WEBHOOK_SECRET");
            refuses_to_listen(serve)
        } else {
            refusal(&run(binary, &args, |c| c.env_remove("WEBHOOK_SECRET")))
        };
        if bare.code != Some(0) {
            bare.assert_plain();
            assert!(
                bare.stderr.contains("Usage:") || bare.stderr.contains("--help"),
                "{binary} {args:?} gives no usage line: {}",
                bare.stderr
            );
        }
    }
}

/// Every variable named in `src/config.rs` or the AWS set-up that `serve`
/// reads is named in `serve --help`; a new one fails here until the help
/// describes it, or it is listed below as read by the Lambdas only.
#[test]
fn serve_help_names_every_variable_serve_reads() {
    const LAMBDA_ONLY: [&str; 6] = [
        "WEBHOOK_SECRET_ARN",
        "ARCHIVE_STREAM",
        "IDEMPOTENCY_TABLE",
        "IDEMPOTENCY_TTL_DAYS",
        "DEAD_LETTER_QUEUE_URL",
        "MAX_RECEIVE_COUNT",
    ];
    let mut variables = Vec::new();
    for file in ["src/config.rs", "src/adapters/aws.rs"] {
        let text = std::fs::read_to_string(project_dir().join(file)).unwrap();
        variables.extend(text.lines().filter_map(|line| {
            let (name, value) = line.strip_prefix("pub const ")?.split_once(": &str = ")?;
            (value == format!("\"{name}\";")).then(|| name.to_owned())
        }));
    }
    for name in LAMBDA_ONLY.iter().chain(&["WEBHOOK_SECRET", "QUEUE_URL", "TLS_SYSTEM_ROOTS"]) {
        assert!(variables.iter().any(|v| v == name), "{name} is no longer a variable in config.rs: {variables:?}");
    }
    let help = run(CLI, &["serve", "--help"], |c| c);
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in variables.iter().filter(|v| !LAMBDA_ONLY.contains(&v.as_str())) {
        assert!(help.contains(variable.as_str()), "serve --help does not name {variable}: {help}");
    }
}

#[test]
fn serve_says_where_the_signing_secret_comes_from_and_how_several_are_separated() {
    serve_refuses(|serve| serve.env_remove("WEBHOOK_SECRET")).assert_plain().assert_says(&[
        "WEBHOOK_SECRET is not set",
        "signing secret (whsec_…) from the Svix portal",
        "nectar-webhooks secret",
    ]);
    let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let commas = format!("{SAMPLE_SECRET},{other}");
    serve_refuses(|serve| serve.env("WEBHOOK_SECRET", &commas))
        .assert_plain()
        .assert_says(&["WEBHOOK_SECRET: entry 1 contains a comma", "separate several secrets with spaces"]);
    refusal(&sign(|c| c.env("WEBHOOK_SECRET", &commas))).assert_plain().assert_says(&["with spaces"]);
}

#[test]
fn serve_refuses_a_queue_url_without_credentials_or_queue() {
    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/ingest";
    let refused = serve_refuses(|serve| serve.env("QUEUE_URL", queue).env("AWS_ENDPOINT_URL", "http://127.0.0.1:9"));
    refused.assert_plain().assert_says(&[
        &format!("QUEUE_URL={queue}: the queue cannot be reached"),
        "no AWS credentials",
        "AWS_ACCESS_KEY_ID",
        "unset QUEUE_URL",
    ]);
    assert_eq!(refused.stderr.lines().count(), 1, "one line, not the SDK's list of providers: {}", refused.stderr);

    let missing = format!("{}/123456789012/{}", moto_endpoint(), unique_name("missing"));
    serve_refuses(|serve| {
        serve
            .env("QUEUE_URL", &missing)
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
    })
    .assert_plain()
    .assert_says(&[
        &format!("QUEUE_URL={missing}"),
        "GetQueueAttributes failed",
        "check QUEUE_URL",
        "AWS_ENDPOINT_URL",
    ]);
}

#[test]
fn redrive_without_credentials_names_the_fix() {
    let dlq = "https://sqs.us-east-1.amazonaws.com/123456789012/ingest-dlq";
    let output = run(CLI, &["redrive", "--dlq", dlq], |c| c.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9"));
    let refused = refusal(&output);
    refused.assert_plain().assert_says(&[&format!("GetQueueAttributes on {dlq}"), "no AWS credentials", "AWS_PROFILE"]);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
}
