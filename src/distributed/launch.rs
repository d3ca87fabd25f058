//! Starting the ranks of a run on this machine, like `torchrun --standalone --nproc-per-node N`.
//!
//! [`launch_local`] starts `nproc` copies of a program with `MASTER_ADDR=127.0.0.1`, a free
//! `MASTER_PORT`, `RANK`, `LOCAL_RANK`, `WORLD_SIZE` and `LOCAL_WORLD_SIZE`, so that each joins the
//! group with [`ProcessGroup::from_env`](super::ProcessGroup::from_env). Their output is forwarded
//! line by line, prefixed with `[rank R] `. When a rank exits with an error or is killed, the
//! others get [`LaunchOptions::grace`] to stop by themselves (their collectives fail and name the
//! rank), then SIGTERM, then SIGKILL; the report names the rank that failed first and how. Ranks
//! get SIGTERM when the launcher itself dies.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// What [`launch_local_with`] starts and how it stops a failed run.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The number of ranks (processes).
    pub nproc: usize,
    /// The program every rank runs.
    pub program: OsString,
    /// Its arguments (the same for every rank).
    pub args: Vec<OsString>,
    /// The store's port; `None` picks a free one.
    pub master_port: Option<u16>,
    /// After a rank fails, how long the others may take to exit by themselves before SIGTERM.
    pub grace: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub kill_after: Duration,
    /// Extra environment variables for every rank.
    pub env: Vec<(OsString, OsString)>,
    /// Prefix each forwarded line with `[rank R] ` (otherwise lines pass through unchanged).
    pub prefix_output: bool,
}

impl LaunchOptions {
    /// `nproc` ranks of `program args`, free port, 30 s grace, SIGKILL 5 s after SIGTERM.
    pub fn new<S: AsRef<OsStr>>(
        nproc: usize,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> LaunchOptions {
        LaunchOptions {
            nproc,
            program: program.as_ref().to_os_string(),
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            master_port: None,
            grace: Duration::from_secs(30),
            kill_after: Duration::from_secs(5),
            env: Vec::new(),
            prefix_output: true,
        }
    }
}

/// The rank that failed first.
#[derive(Debug, Clone)]
pub struct RankFailure {
    /// Its rank.
    pub rank: usize,
    /// Its process id.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
}

impl RankFailure {
    /// E.g. "rank 1 (pid 4242) was killed by signal 9 (SIGKILL)".
    pub fn describe(&self) -> String {
        format!(
            "rank {} (pid {}) {}",
            self.rank,
            self.pid,
            describe_status(self.status)
        )
    }
}

/// How a launch ended.
#[derive(Debug, Clone)]
pub struct LaunchReport {
    /// Success when every rank succeeded, else the status of the rank that failed first.
    pub status: ExitStatus,
    /// The rank that failed first, if any.
    pub failure: Option<RankFailure>,
    /// Every rank's exit status, in rank order.
    pub statuses: Vec<ExitStatus>,
    /// The ranks the launcher had to terminate (SIGTERM or SIGKILL) after the failure.
    pub terminated: Vec<usize>,
    /// The store's port the ranks used.
    pub master_port: u16,
}

impl LaunchReport {
    /// One line: success, or which rank failed how and which ranks were terminated.
    pub fn summary(&self) -> String {
        match &self.failure {
            None => format!("all {} ranks finished", self.statuses.len()),
            Some(f) => {
                let mut s = f.describe();
                if !self.terminated.is_empty() {
                    let r: Vec<String> = self.terminated.iter().map(|r| r.to_string()).collect();
                    s.push_str(&format!(
                        "; terminated rank(s) {} that did not stop by themselves",
                        r.join(", ")
                    ));
                }
                s
            }
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL: killed from outside, or by the out-of-memory killer",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// "exited with status 3", "was killed by signal 11 (SIGSEGV)".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("was killed by signal {sig} ({}{core})", signal_name(sig))
    } else {
        format!("ended with {status}")
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Starts `nproc` local ranks of `program args` and waits for them (see the module docs). Returns
/// success when every rank succeeded; otherwise prints the failure (which rank, how, which ranks
/// were terminated) to stderr and returns the status of the rank that failed first, for the
/// launcher to exit with. Errors only when a rank cannot be started.
pub fn launch_local<S: AsRef<OsStr>>(
    nproc: usize,
    program: impl AsRef<OsStr>,
    args: &[S],
) -> Result<ExitStatus> {
    let report = launch_local_with(&LaunchOptions::new(nproc, program, args))?;
    if report.failure.is_some() {
        eprintln!("genflow launch: {}", report.summary());
    }
    Ok(report.status)
}

/// Forwards one pipe line by line (bytes as they are), prefixed with the rank.
fn forward(
    pipe: impl Read + Send + 'static,
    prefix: String,
    to_stderr: bool,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("genflow-launch-output".into())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() != Some(&b'\n') {
                            line.push(b'\n');
                        }
                        let mut buf = prefix.clone().into_bytes();
                        buf.extend_from_slice(&line);
                        let _ = if to_stderr {
                            std::io::stderr().lock().write_all(&buf)
                        } else {
                            std::io::stdout().lock().write_all(&buf)
                        };
                    }
                }
            }
        })
        .ok()
}

fn terminate(child: &Child, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Starts the ranks `opts` describes and waits for all of them; the report says how they ended.
pub fn launch_local_with(opts: &LaunchOptions) -> Result<LaunchReport> {
    if opts.nproc == 0 {
        return Err(Error::config("--nproc is 0: launch at least one rank"));
    }
    let port = match opts.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let omp = (threads / opts.nproc).max(1).to_string();
    let mut children: Vec<Child> = Vec::with_capacity(opts.nproc);
    let mut pumps = Vec::new();
    for rank in 0..opts.nproc {
        let mut cmd = Command::new(&opts.program);
        cmd.args(&opts.args)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", opts.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", opts.nproc.to_string())
            .env("GROUP_RANK", "0")
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // which is async-signal-safe: the rank gets SIGTERM if the launcher dies, so no rank
        // outlives a killed launcher.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            // The ranks share the cores (torchrun sets 1; an even share keeps CPU runs fast).
            cmd.env("OMP_NUM_THREADS", &omp);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(Error::distributed(format!(
                    "could not start rank {rank} ({}): {e}",
                    opts.program.to_string_lossy()
                )));
            }
        };
        let prefix = if opts.prefix_output {
            format!("[rank {rank}] ")
        } else {
            String::new()
        };
        if let Some(out) = child.stdout.take() {
            pumps.extend(forward(out, prefix.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            pumps.extend(forward(err, prefix, true));
        }
        children.push(child);
    }

    let mut statuses: Vec<Option<ExitStatus>> = vec![None; opts.nproc];
    let mut failure: Option<RankFailure> = None;
    let mut failed_at: Option<Instant> = None;
    let mut termed_at: Option<Instant> = None;
    let mut killed = false;
    let mut terminated = Vec::new();
    loop {
        for (rank, child) in children.iter_mut().enumerate() {
            if statuses[rank].is_some() {
                continue;
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    statuses[rank] = Some(status);
                    if !status.success() && failure.is_none() {
                        failure = Some(RankFailure {
                            rank,
                            pid: child.id(),
                            status,
                        });
                        failed_at = Some(Instant::now());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::distributed(format!(
                        "waiting for rank {rank} failed: {e}"
                    )));
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if let Some(t) = failed_at {
            if termed_at.is_none() && t.elapsed() >= opts.grace {
                for (rank, child) in children.iter().enumerate() {
                    if statuses[rank].is_none() {
                        terminate(child, libc::SIGTERM);
                        terminated.push(rank);
                    }
                }
                termed_at = Some(Instant::now());
            } else if let Some(t2) = termed_at {
                if !killed && t2.elapsed() >= opts.kill_after {
                    for (rank, child) in children.iter_mut().enumerate() {
                        if statuses[rank].is_none() {
                            let _ = child.kill();
                        }
                    }
                    killed = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pumps {
        let _ = p.join();
    }
    let statuses: Vec<ExitStatus> = statuses
        .into_iter()
        .map(|s| s.unwrap_or_else(|| ExitStatus::from_raw(0)))
        .collect();
    let status = failure
        .as_ref()
        .map_or(ExitStatus::from_raw(0), |f| f.status);
    Ok(LaunchReport {
        status,
        failure,
        statuses,
        terminated,
        master_port: port,
    })
}
