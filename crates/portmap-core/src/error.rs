//! The crate's error types: configuration errors (every one with `file:line:col` when the text is
//! known, the field, and what would be valid), plan-file errors, and [`Error`] uniting them.
//!
//! This module only formats; it must not decide what is valid (that is `validate.rs` and `load.rs`).

use std::fmt;

use crate::diagnostic::{MAX_ERRORS, shown};

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigError {
    /// Where the configuration came from (a file name, `-`, or `config` for one built in code).
    pub origin: String,
    /// Line and column (both 1-based, the column counted in characters) when known.
    pub position: Option<(usize, usize)>,
    /// The field, e.g. `mappings[2].port` or `wan.interfaces[0]`; empty for the file as a whole.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The problems found in a configuration: the first [`MAX_ERRORS`] by position (errors without a
/// position last), and how many were found in all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
    total: usize,
}

impl ConfigErrors {
    /// `errors` sorted by position; only the first [`MAX_ERRORS`] are kept, the rest counted.
    pub fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.position.is_none(), e.position));
        let total = errors.len();
        errors.truncate(MAX_ERRORS);
        ConfigErrors { errors, total }
    }

    /// Errors already sorted and capped, out of `total` found.
    pub(crate) fn counted(errors: Vec<ConfigError>, total: usize) -> Self {
        ConfigErrors { errors, total }
    }

    /// Number of errors found, including those not kept.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when there is no error (never the case for a returned `Err`).
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Errors found but not kept (past the first [`MAX_ERRORS`]).
    pub fn omitted(&self) -> usize {
        self.total - self.errors.len()
    }

    /// The kept errors, in order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// The kept errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line (the first [`MAX_ERRORS`]), `and N more errors` when there were more,
    /// then a count: `2 errors in portmap.yaml.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            writeln!(f, "{error}")?;
        }
        let omitted = self.omitted();
        if omitted > 0 {
            writeln!(
                f,
                "and {omitted} more error{} (only the first {} are shown)",
                if omitted == 1 { "" } else { "s" },
                self.errors.len()
            )?;
        }
        let n = self.total;
        let origin = self
            .errors
            .first()
            .map_or("the configuration", |e| e.origin.as_str());
        write!(f, "{n} error{} in {origin}.", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigErrors {}

/// Why a saved plan file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanFileError {
    /// The text is not JSON.
    #[error("the plan file is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON has no `format_version`.
    #[error("the file has no format_version: it is not a plan written by `portmap plan --out`")]
    NotAPlan,
    /// The plan was written in a format this version does not read.
    #[error(
        "plan file format_version {} is not supported (this portmap reads format_version {supported}); \
         make the plan again with this portmap",
        shown(&found.to_string())
    )]
    UnsupportedVersion {
        /// The version found in the file.
        found: serde_json::Value,
        /// The version this crate reads.
        supported: u32,
    },
    /// The JSON does not have a plan's shape.
    #[error("the plan file is damaged: its content does not have the shape of a plan")]
    Shape(#[source] serde_json::Error),
    /// The desired state inside the plan does not pass validation.
    #[error("the plan file's desired configuration is not valid")]
    Invalid(#[source] ConfigErrors),
    /// The plan does not say where or at which generation it was made, so it cannot be checked
    /// against the kernel.
    #[error("the plan file cannot be applied safely: {0}; make the plan again with `portmap plan --out`")]
    Unbound(&'static str),
    /// The parts of the plan contradict each other.
    #[error("the plan file is inconsistent: {0}")]
    Inconsistent(String),
}

/// Why a plan is not committed: it was made for another backend, table or place (boot and network
/// namespace), it carries no generation, or the ruleset has moved past its generation. Shared by
/// every backend and by the orchestration, so each says it in the same words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The plan is for another backend.
    #[error("this plan was made for the {planned} backend, not {actual}; use --backend to match")]
    WrongBackend {
        /// The plan's backend (escaped).
        planned: String,
        /// The backend asked to commit it.
        actual: String,
    },
    /// The plan is for another table (or chain prefix).
    #[error("this plan was made for {planned}, but portmap is managing {actual}; use --table to match")]
    WrongTable {
        /// The plan's table (escaped).
        planned: String,
        /// The table the backend manages.
        actual: String,
    },
    /// The plan was made for another network namespace, host or boot.
    #[error(
        "this plan was made for {planned}, but portmap is working in {actual}; a plan applies only where it was made — run `portmap plan` here"
    )]
    WrongPlace {
        /// Where the plan was made.
        planned: crate::model::Place,
        /// Where the backend works.
        actual: crate::model::Place,
    },
    /// The plan does not say which generation it was made at.
    #[error(
        "this plan does not say which ruleset generation it was made at, so portmap cannot tell whether the kernel changed since; nothing was applied — run `portmap plan` again"
    )]
    NoGeneration,
    /// The ruleset changed after the plan was made.
    #[error(
        "another program changed the ruleset after this plan was made (the plan was made at generation {planned}); nothing was applied — run `portmap plan` again"
    )]
    Stale {
        /// Generation recorded in the plan.
        planned: u32,
    },
}

/// Every error this crate returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration did not validate.
    #[error("invalid configuration")]
    Config(#[from] ConfigErrors),
    /// A saved plan could not be read.
    #[error("unusable plan file")]
    PlanFile(#[from] PlanFileError),
}
