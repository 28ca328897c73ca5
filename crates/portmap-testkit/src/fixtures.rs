//! The bad configuration fixtures under `tests/fixtures/bad/` and where their errors are, shared by the
//! CLI tests (message format) and the end-to-end tests (the kernel stays untouched).

/// One invalid fixture and the diagnostics it must produce.
#[derive(Debug, Clone, Copy)]
pub struct BadFixture {
    /// Path under `tests/fixtures/`.
    pub file: &'static str,
    /// For each expected error: the lines it may be reported on (one of them) and a word the
    /// `field: message` part must contain.
    pub errors: &'static [(&'static [u32], &'static str)],
}

/// Every bad fixture. Line numbers are 1-based and refer to the fixture files as committed.
pub const BAD_FIXTURES: &[BadFixture] = &[
    BadFixture {
        file: "bad/unknown-key.yaml",
        errors: &[(&[8], "protocl")],
    },
    BadFixture {
        file: "bad/port-zero.yaml",
        errors: &[(&[9], "port")],
    },
    // The overlap may be reported at either mapping's port.
    BadFixture {
        file: "bad/overlapping-ports.yaml",
        errors: &[(&[9, 14], "port")],
    },
    BadFixture {
        file: "bad/hostile-name.yaml",
        errors: &[(&[7], "name")],
    },
    BadFixture {
        file: "bad/several-errors.yaml",
        errors: &[(&[9], "port"), (&[13], "protocol"), (&[15], "to")],
    },
];

/// The valid fixtures directly under `tests/fixtures/`.
pub const GOOD_FIXTURES: &[&str] = &[
    "home-router.yaml",
    "allow-lists.yaml",
    "ranges.yaml",
    "both.yaml",
    "ipv6.yaml",
    "masquerade.yaml",
];

impl BadFixture {
    /// Absolute path of the fixture.
    pub fn path(&self) -> std::path::PathBuf {
        crate::portmap::fixture(self.file)
    }

    /// Assert that `run` failed with exit 1 and reported every expected error as
    /// `FILE:LINE:COL: field: message`, FILE being `printed_file` when given (e.g. `<stdin>` is not
    /// checked: pass `None`).
    #[track_caller]
    pub fn check(&self, run: &crate::command::Run, printed_file: Option<&str>) {
        run.expect_code(1);
        let found = crate::portmap::diagnostics(&run.stderr);
        assert!(
            !found.is_empty(),
            "{}: no FILE:LINE:COL: diagnostics on stderr\n{run}",
            self.file
        );
        for (lines, word) in self.errors {
            let hit = found.iter().any(|d| {
                lines.contains(&d.line) && d.text.contains(word) && printed_file.is_none_or(|f| d.file == f)
            });
            assert!(
                hit,
                "{}: expected a diagnostic on line {lines:?} mentioning `{word}`{}; found {found:#?}\n{run}",
                self.file,
                printed_file.map(|f| format!(" for file {f}")).unwrap_or_default()
            );
        }
    }
}
