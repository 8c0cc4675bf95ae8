//! A `dermaga` process started from the test binary's build, with its log lines on a channel.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `dermaga` process whose log lines arrive on a channel.
pub struct Dermaga {
    pub child: Child,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dermaga {
    pub fn start(args: &[&str]) -> Self {
        Self::start_under(&[], args)
    }

    /// Starts `dermaga` through a wrapper command, e.g. `["prlimit", "--nofile=64:64", "--"]`:
    /// the wrapper gets the binary's path and then `args`.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Self {
        let binary = env!("CARGO_BIN_EXE_dermaga");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info,kube_client=off,kube_runtime=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dermaga");
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Starts `dermaga` with stdout and stderr on pipes that nobody reads (they stay open: once
    /// their 64 KiB fill, every write to them blocks). `RUST_LOG` is `rust_log`. No log line can
    /// be waited for: give the admin address on the command line.
    pub fn start_unread(args: &[&str], rust_log: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_dermaga"))
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dermaga");
        let (_, logs) = mpsc::channel();
        Self {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing every one of `parts` (an event, bounded by 20 s).
    pub fn wait_log(&mut self, parts: &[&str]) -> String {
        if let Some(line) = self
            .seen
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {parts:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "dermaga did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dermaga {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dermaga {
    /// The admin server's address, from its start-up log line.
    pub fn admin_address(&mut self) -> SocketAddr {
        self.logged_address("admin server listening")
    }

    /// The `address=` of the first log line containing `what`.
    pub fn logged_address(&mut self, what: &str) -> SocketAddr {
        let line = self.wait_log(&[what]);
        line.split("address=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
