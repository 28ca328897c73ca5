//! The binary's side of `--json`: printing the library's documents (`portmap::json`), and turning
//! a failed command into an error document. Under `--json` standard output carries exactly one
//! JSON document whatever happens — the result, or `{"format", "command", "error"}` — and the exit
//! code is the same as without it (0, 1, or 2 with `--detailed-exitcode`). Standard error carries
//! only what people read (logs, the lock-wait notice), never anything a program has to parse.

use std::fmt;

use anyhow::Result;
use portmap::ConfigErrors;
use portmap::json::{Failure, error_document};
use serde_json::Value;

use crate::{Command, say};

/// A configuration that did not validate, with its errors kept whole for `--json`. Displayed as
/// the text the CLI has always printed.
#[derive(Debug)]
pub(crate) struct InvalidConfig {
    pub(crate) origin: String,
    pub(crate) errors: ConfigErrors,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a valid portmap configuration; nothing was changed:\n{}",
            self.origin, self.errors
        )
    }
}

impl std::error::Error for InvalidConfig {}

/// A command line that asks for something the command cannot do (`apply --json` without
/// `--auto-approve`): kind `usage` under `--json`.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) &'static str);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Usage {}

/// A command-line argument that cannot work, said in a sentence built at run time (`explain`'s
/// `--from` and `--to` of different families): kind `usage` under `--json`.
#[derive(Debug)]
pub(crate) struct BadArgument(pub(crate) String);

impl fmt::Display for BadArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadArgument {}

/// Print a document on standard output, pretty, one line break at the end.
pub(crate) fn emit(document: &Value) -> Result<()> {
    say(&(serde_json::to_string_pretty(document)? + "\n"))
}

/// The command's name for the `command` field when it was asked for JSON, else `None`.
pub(crate) fn json_command(command: &Command) -> Option<&'static str> {
    let (name, json) = match command {
        Command::Validate { json, .. } => ("validate", *json),
        Command::Plan { json, .. } => ("plan", *json),
        Command::Show { json, .. } => ("show", *json),
        Command::Apply { json, .. } => ("apply", *json),
        Command::Status { json } => ("status", *json),
        Command::Destroy { json, .. } => ("destroy", *json),
        Command::Confirm { json } => ("confirm", *json),
        Command::Rollback { json } => ("rollback", *json),
        Command::Explain { json, .. } => ("explain", *json),
        // Streams and texts of their own formats: `log --json` is one object a line, `metrics`
        // is Prometheus text, `import` is YAML.
        Command::Render(_)
        | Command::ConfirmWatchdog { .. }
        | Command::Watch { .. }
        | Command::Import { .. }
        | Command::Metrics { .. }
        | Command::Log { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Schema => return None,
    };
    json.then_some(name)
}

/// A word for what kind of failure `err` is, from the typed errors in its chain.
fn kind(err: &anyhow::Error) -> &'static str {
    for cause in err.chain() {
        if cause.downcast_ref::<Usage>().is_some() || cause.downcast_ref::<BadArgument>().is_some() {
            return "usage";
        }
        if cause.downcast_ref::<InvalidConfig>().is_some() {
            return "invalid_config";
        }
        if let Some(e) = cause.downcast_ref::<portmap::Error>() {
            return match e {
                portmap::Error::Config(_) => "invalid_config",
                portmap::Error::PlanFile(_) => "invalid_plan_file",
                portmap::Error::Refused(_) | portmap::Error::PlanMismatch(_) => "refused",
                portmap::Error::NotConverged(_) => "not_converged",
                portmap::Error::Overtaken(_) | portmap::Error::Contended { .. } => "contended",
                portmap::Error::Declined => "cancelled",
                portmap::Error::Lock(_) => "lock",
                portmap::Error::Confirm(_) => "confirm",
                _ => "backend",
            };
        }
        if cause.downcast_ref::<portmap::PlanFileError>().is_some() {
            return "invalid_plan_file";
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return "io";
        }
    }
    "error"
}

/// The error document of `command` for `err`.
pub(crate) fn error(command: &str, err: &anyhow::Error) -> Value {
    let message = format!("{err:#}");
    let invalid = err.chain().find_map(|c| c.downcast_ref::<InvalidConfig>());
    error_document(
        command,
        &Failure {
            kind: kind(err),
            message: &message,
            config_errors: invalid.map(|i| &i.errors),
        },
    )
}

/// The commands that speak JSON, to find the one a command line that cannot be parsed names.
const COMMANDS: [&str; 9] = [
    "validate", "plan", "show", "apply", "status", "destroy", "confirm", "rollback", "explain",
];

/// When the command line cannot be parsed but asks for `--json`: the usage error as a document
/// (`command` is the first word that is a command, or null).
pub(crate) fn usage_error(err: &clap::Error) -> Option<Value> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !args.iter().any(|a| a == "--json") {
        return None;
    }
    let command = args.iter().find(|a| COMMANDS.contains(&a.as_str()));
    let message = err.render().to_string();
    let message = message.trim_end().trim_start_matches("error: ");
    let mut doc = error_document(
        command.map_or("", String::as_str),
        &Failure {
            kind: "usage",
            message,
            config_errors: None,
        },
    );
    if command.is_none() {
        doc["command"] = Value::Null;
    }
    Some(doc)
}
