//! What to say when the command line is almost right: a configuration given where a saved plan
//! belongs (`portmap apply file.yaml`), or as a positional argument to a command that takes `-c`
//! (`portmap plan file.yaml`). Only messages: nothing here decides what a command does.

use std::path::Path;

use crate::shown_path;

/// Whether `path` names a YAML file by its extension.
fn yaml_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// The error for `portmap apply PLANFILE` when PLANFILE's `text` is not a plan: when it is (or is
/// named like) a configuration, the `-c` that was probably meant.
pub(crate) fn not_a_plan(path: &Path, text: &str, error: portmap::PlanFileError) -> anyhow::Error {
    let shown = shown_path(path);
    let not_json = matches!(error, portmap::PlanFileError::Json(_));
    let is_config = not_json && portmap::parse_config(text, &shown).is_ok();
    if is_config || (not_json && yaml_name(path)) {
        let what = if is_config {
            "a portmap configuration"
        } else {
            "YAML"
        };
        return anyhow::anyhow!(
            "{shown} is {what}, not a plan saved by `portmap plan --out`; did you mean `portmap apply -c {shown}`?"
        );
    }
    anyhow::Error::new(error).context(format!("{shown} is not a portmap plan"))
}

/// A line to add to clap's usage error when an unexpected positional argument looks like a
/// configuration file: the `-c` form of the same command.
pub(crate) fn usage(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let path = Path::new(arg);
    if arg.starts_with('-') || !(yaml_name(path) || path.is_file()) {
        return None;
    }
    // The command the argument was given to: the first word that is one of portmap's commands.
    let command = std::env::args()
        .skip(1)
        .find(|a| matches!(a.as_str(), "validate" | "render" | "plan" | "apply" | "watch"))?;
    Some(format!(
        "tip: a configuration file is given with -c: `portmap {command} -c {}`\n",
        shown_path(path)
    ))
}
