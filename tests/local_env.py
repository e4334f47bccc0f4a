"""events/local.env loads in `cargo lambda watch --env-file events/local.env`.

Run by `make local-env-check` (part of `make test`) with .venv's python:
    .venv/bin/python tests/local_env.py
It ends with `N passed, M failed` and exits non-zero if any failed.

cargo-lambda reads an env file with the env-file-reader crate (0.3), a logos
lexer and a LALRPOP grammar; `parse` below follows both:

- tokens, at each position the longest match (a literal before a pattern of
  the same length): `=`; `export`; a newline with the blanks after it; an
  identifier, a run of anything but blanks, `=`, quotes, backticks and `#`;
  a '...', `...` or "..." string (in "..." a \\" does not end it), whose quotes
  are removed and whose \\<quote> and \\n are unescaped; `#` to the end of the
  line and runs of blanks are skipped; any other character is an error.
- grammar: the file is lines; a line is `[export] KEY = VALUE`, a newline, or
  the end. VALUE is one identifier or one string, or nothing (a newline or
  the end). Nothing else may follow on the line.

So an unquoted value cannot hold `=` (`ROUTES=*=stdout` is KEY `*`, then a
stray `=`): cargo-lambda stops with `invalid environment file: ParseError`.
"""

import json
import re
import subprocess
import sys
import unittest
from pathlib import Path

from counting_runner import run

ROOT = Path(__file__).resolve().parent.parent
LOCAL_ENV = ROOT / "events" / "local.env"
ENV_JSON = ROOT / "env.json"
MAKEFILE = ROOT / "Makefile"


class ParseError(Exception):
    """What env-file-reader answers for an ill-formed file (cargo-lambda: `ParseError`)."""


EQ, EXPORT, NEWLINE, IDENT, STRING, EOF = "=", "export", "newline", "ident", "string", "eof"

# (kind, pattern), in the lexer's order of priority for matches of equal length.
PATTERNS = [
    (EQ, re.compile(r"=")),
    (EXPORT, re.compile(r"export")),
    (NEWLINE, re.compile(r"\n\s*")),
    (STRING, re.compile(r"'[^']*'")),
    (STRING, re.compile(r"`[^`]*`")),
    (IDENT, re.compile(r"""[^\s='`"#]+""")),
    (None, re.compile(r"#.*")),  # skipped
    (None, re.compile(r"\s+")),  # skipped
]
DOUBLE_QUOTED = re.compile(r'"([^"]|\\")*"')


def unquote(text):
    if len(text) <= 2:
        return ""
    quote = text[0]
    return text[1:-1].replace("\\" + quote, quote).replace("\\n", "\n")


def longest_double_quoted(text, start):
    """The longest "..." string at start, as a DFA's longest match finds it (Python's re would stop
    at the first quote that can end it)."""
    if not text.startswith('"', start):
        return None
    ends = [m.start() for m in re.finditer('"', text[start + 1:])]
    for end in reversed(ends):
        candidate = text[start:start + 1 + end + 1]
        if DOUBLE_QUOTED.fullmatch(candidate):
            return candidate
    return None


def tokens(text):
    position = 0
    while position < len(text):
        best = None  # (length, kind, value)
        for kind, pattern in PATTERNS:
            m = pattern.match(text, position)
            if m and (best is None or len(m.group()) > best[0]):
                best = (len(m.group()), kind, m.group())
        quoted = longest_double_quoted(text, position)
        if quoted and (best is None or len(quoted) > best[0]):
            best = (len(quoted), STRING, quoted)
        if best is None or best[0] == 0:
            raise ParseError(f"no token at offset {position}: {text[position:position + 20]!r}")
        length, kind, value = best
        if kind == STRING:
            value = unquote(value)
        if kind is not None:
            yield kind, value
        position += length
    yield EOF, ""


def parse(text):
    """The variables env-file-reader reads from text, in order (a later one of the same name wins)."""
    stream = list(tokens(text))
    variables = []
    i = 0
    while i < len(stream):
        kind, value = stream[i]
        if kind in (NEWLINE, EOF):
            i += 1
            continue
        if kind == EXPORT:
            i += 1
            kind, value = stream[i]
        if kind != IDENT:
            raise ParseError(f"expected a name, found {kind} {value!r}")
        key = value
        kind, _ = stream[i + 1]
        if kind != EQ:
            raise ParseError(f"{key}: expected =, found {kind}")
        kind, value = stream[i + 2]
        if kind in (IDENT, STRING):
            variables.append((key, value))
            i += 3
        elif kind in (NEWLINE, EOF):
            variables.append((key, ""))
            i += 3
        else:
            raise ParseError(f"{key}: expected a value, found {kind} {value!r}")
    return variables


class LocalEnv(unittest.TestCase):
    maxDiff = None

    def test_a_the_parser_follows_env_file_reader(self):
        """(a) The rules above, on the cases that matter here: the two lines that stopped
        cargo-lambda fail, their quoted forms read back exactly."""
        good = {
            "A=b": [("A", "b")],
            "A=": [("A", "")],
            "A=\nB=c": [("A", ""), ("B", "c")],
            "export A=b": [("A", "b")],
            "# comment\nA=b # trailing\n\n  B=c": [("A", "b"), ("B", "c")],
            "A='b=c'": [("A", "b=c")],
            "A=\"b=c\"": [("A", "b=c")],
            "A=`*=stdout`": [("A", "*=stdout")],
            'A="x\\"y"': [("A", 'x"y')],
            "A='a\\nb'": [("A", "a\nb")],
            "A=http://127.0.0.1:5000/123456789012/q": [("A", "http://127.0.0.1:5000/123456789012/q")],
            "WEBHOOK_SECRET='whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ='":
                [("WEBHOOK_SECRET", "whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=")],
        }
        for text, expected in good.items():
            with self.subTest(text):
                self.assertEqual(parse(text), expected)
        bad = [
            "WEBHOOK_SECRET=whsec_bmVjdGFyLXdlYmhvb2tzLXNhbXBsZS1zZWNyZXQ=",
            "ROUTES=*=stdout",
            "A=b c",
            "A b",
            "=b",
            "A='unterminated",
        ]
        for text in bad:
            with self.subTest(text):
                with self.assertRaises(ParseError, msg=f"{text!r} must not parse"):
                    parse(text)

    def test_b_local_env_loads(self):
        """(b) events/local.env parses by those rules, each name once."""
        variables = parse(LOCAL_ENV.read_text())
        names = [k for k, _ in variables]
        self.assertTrue(variables, f"{LOCAL_ENV} sets nothing")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        self.assertFalse(duplicates, f"{LOCAL_ENV} sets {duplicates} more than once")

    def test_c_local_env_says_what_the_samples_need(self):
        """(c) It gives the sample secret the events are signed with (Makefile's SAMPLE_SECRET, also
        in env.json), ROUTES=*=stdout, the wide tolerance env.json gives, and AWS_SAM_LOCAL=true,
        without which ingest refuses that tolerance."""
        variables = dict(parse(LOCAL_ENV.read_text()))
        sample = re.search(r"^SAMPLE_SECRET := (\S+)$", MAKEFILE.read_text(), re.M)
        self.assertIsNotNone(sample, "no SAMPLE_SECRET in the Makefile")
        ingest = json.loads(ENV_JSON.read_text())["IngestFunction"]
        self.assertEqual(variables.get("WEBHOOK_SECRET"), sample.group(1), "WEBHOOK_SECRET vs Makefile SAMPLE_SECRET")
        self.assertEqual(variables.get("WEBHOOK_SECRET"), ingest["WEBHOOK_SECRET"], "WEBHOOK_SECRET vs env.json")
        self.assertEqual(variables.get("WEBHOOK_TOLERANCE_SECS"), ingest["WEBHOOK_TOLERANCE_SECS"],
                         "WEBHOOK_TOLERANCE_SECS vs env.json")
        self.assertEqual(variables.get("AWS_SAM_LOCAL"), "true")
        self.assertEqual(variables.get("ROUTES"), "*=stdout")

    def test_d_a_shell_reads_the_same_values(self):
        """(d) `set -a; . events/local.env` in bash gives the same values (for whoever sources it)."""
        variables = dict(parse(LOCAL_ENV.read_text()))
        script = 'set -a; . "$1"; for name in "${@:2}"; do printf "%s\\0" "${!name}"; done'
        out = subprocess.run(["bash", "-c", script, "bash", str(LOCAL_ENV), *variables], check=True,
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
        self.assertEqual(dict(zip(variables, out.split("\0"))), variables)


if __name__ == "__main__":
    sys.exit(run(LocalEnv))
