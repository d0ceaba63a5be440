//! Child processes that never outlive the test process.
//!
//! A process runs under a small shell watchdog that kills it as soon as the test process's
//! end of a pipe closes — which happens even when the test process is killed — so no test
//! leaves servers behind. Output goes to a log file, which readiness checks can poll.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Where a watched process writes and runs.
pub struct Output<'a> {
    /// Its stdout (and stderr, unless [`Output::stderr`] is set), appended.
    pub log: &'a Path,
    /// Its stderr, appended, if apart from stdout.
    pub stderr: Option<&'a Path>,
    /// Its working directory, if not the test's.
    pub cwd: Option<&'a Path>,
}

/// A running child process under a watchdog.
pub struct Watched {
    watchdog: Option<(Child, ChildStdin)>,
    pid: u32,
    log: PathBuf,
}

impl Watched {
    /// Starts `program` with `args` and `envs`, appending its stdout and stderr to `log`. When
    /// `cleanup` is set, the watchdog removes that directory after the process is gone.
    pub fn spawn<I, S>(
        program: &Path,
        args: I,
        envs: &[(&str, &str)],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Watched, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Watched::spawn_with(program, args, envs, &Output { log, stderr: None, cwd: None }, cleanup)
    }

    /// [`Watched::spawn`] with stderr to its own file and a working directory, if given.
    pub fn spawn_with<I, S>(
        program: &Path,
        args: I,
        envs: &[(&str, &str)],
        out: &Output<'_>,
        cleanup: Option<&Path>,
    ) -> Result<Watched, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let script = r#"log="$1"; err="$2"; shift 2; if [ -n "$err" ]; then "$@" >>"$log" 2>>"$err" & else "$@" >>"$log" 2>&1 & fi; pid=$!; echo "$pid"; read _ignored; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; if [ -n "$VT_CLEANUP" ]; then rm -rf "$VT_CLEANUP"; fi"#;
        let log = out.log;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg("sh").arg(log).arg(out.stderr.map(Path::as_os_str).unwrap_or_default());
        cmd.arg(program).args(args);
        if let Some(dir) = out.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.env("VT_CLEANUP", cleanup.map(|p| p.as_os_str()).unwrap_or_default());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the pid: {e}"))?;
        let pid = line.trim().parse().map_err(|_| format!("bad pid line {line:?}"))?;
        Ok(Watched { watchdog: Some((child, stdin)), pid, log: log.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        self.watchdog.is_some() && Path::new(&format!("/proc/{}", self.pid)).exists() && !is_zombie(self.pid)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of `s`.
pub fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
