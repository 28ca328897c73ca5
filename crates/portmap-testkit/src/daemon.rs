//! A long-running program under test (`portmap watch`): started without a terminal, its standard
//! error read line by line as it comes (each line with the time it arrived), signalled, and waited
//! for with a time limit. Dropping it kills the process, so a failing test never leaves one behind.
//!
//! Knows nothing about namespaces; callers put `ip netns exec NAME` in front themselves (which
//! `exec`s the program, so the pid is the program's own).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One line of standard error and when the test saw it.
#[derive(Debug, Clone)]
pub struct Line {
    /// When the reader thread read it.
    pub at: Instant,
    /// The line, without its newline.
    pub text: String,
}

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<Line>,
    closed: bool,
}

/// A started program whose standard error is collected. See the module docs.
#[derive(Debug)]
pub struct Daemon {
    command: String,
    child: Child,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Start `program args…` in a new session (no controlling terminal), standard input and
    /// output `/dev/null`, with the extra environment `env`.
    #[track_caller]
    pub fn start(program: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let command = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(text) = line else { break };
                let (lock, cond) = &*sink;
                lock.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .lines
                    .push(Line {
                        at: Instant::now(),
                        text,
                    });
                cond.notify_all();
            }
            let (lock, cond) = &*sink;
            lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            cond.notify_all();
        });
        Daemon {
            command,
            child,
            lines,
            exited: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
            .clone()
    }

    /// Everything so far as one text, for messages.
    pub fn log(&self) -> String {
        let lines: Vec<String> = self.lines().into_iter().map(|l| l.text).collect();
        format!("$ {}\n{}", self.command, lines.join("\n"))
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.text.contains(needle)).count()
    }

    /// Wait up to `limit` for the `n`-th line (from 1) that contains `needle`; panics with the
    /// whole log when it does not come (or the program ends first).
    #[track_caller]
    pub fn wait_for_nth(&self, n: usize, needle: &str, limit: Duration) -> Line {
        match self.try_wait_for_nth(n, needle, limit) {
            Some(line) => line,
            None => panic!(
                "no line #{n} containing {needle:?} within {limit:?}\n{}",
                self.log()
            ),
        }
    }

    /// Wait up to `limit` for the first line that contains `needle`.
    #[track_caller]
    pub fn wait_for(&self, needle: &str, limit: Duration) -> Line {
        self.wait_for_nth(1, needle, limit)
    }

    /// [`Daemon::wait_for_nth`] without the panic.
    pub fn try_wait_for_nth(&self, n: usize, needle: &str, limit: Duration) -> Option<Line> {
        let deadline = Instant::now() + limit;
        let (lock, cond) = &*self.lines;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(line) = guard
                .lines
                .iter()
                .filter(|l| l.text.contains(needle))
                .nth(n.saturating_sub(1))
            {
                return Some(line.clone());
            }
            let now = Instant::now();
            if guard.closed || now >= deadline {
                return None;
            }
            guard = cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Wait up to `limit` for the reader thread to reach the end of standard error.
    fn wait_closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let (lock, cond) = &*self.lines;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !guard.closed {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            guard = cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Send `signal` (e.g. `libc::SIGHUP`).
    #[track_caller]
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped (we hold the Child).
        let rc = unsafe { libc::kill(pid, signal) };
        assert!(
            rc == 0,
            "kill {signal} {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Wait up to `limit` for the program to end and return its exit code (`128 + signal` when
    /// killed); panics when it does not end in time.
    #[track_caller]
    pub fn wait(&mut self, limit: Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exited = Some(status);
                    self.wait_closed(Duration::from_millis(500));
                    return status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                }
                Ok(None) if Instant::now() >= deadline => {
                    panic!("`{}` did not end within {limit:?}\n{}", self.command, self.log())
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for `{}`: {e}", self.command),
            }
        }
    }

    /// Whether the program is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
