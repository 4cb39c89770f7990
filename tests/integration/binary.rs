//! The `crm-comms` binary as a child process, for tests of what only the process shows:
//! its log lines, signals, flags and exporters.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// The `crm-comms` binary under test, with its stderr lines collected.
pub struct Binary {
    /// The server process.
    pub child: Child,
    /// Its `host:port`.
    pub addr: String,
    /// Its stderr, line by line.
    pub lines: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Binary {
    /// The binary on a fresh SQLite database.
    pub fn start(args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("crm.db").display());
        let mut binary = Binary::start_on(&url, args);
        binary._dir = Some(dir);
        binary
    }

    /// The binary on the database at `url`.
    pub fn start_on(url: &str, args: &[&str]) -> Binary {
        Binary::start_with_env(url, args, &[])
    }

    /// The binary on the database at `url`, with `env` set (the test's own logging and
    /// OpenTelemetry variables are removed first).
    pub fn start_with_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        // The content index stays off unless `args` turn it on.
        let index: &[&str] = if args.contains(&"--content-index") {
            &[]
        } else {
            &["--content-index", "false"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-comms"))
            .args(["--listen", &addr, "--database-url", url])
            .args(index)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("CRM_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            addr,
            lines,
            _dir: None,
        }
    }

    /// A channel to it, once it accepts connections (up to 30 s).
    pub async fn channel(&self) -> Channel {
        let started = Instant::now();
        loop {
            match Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("{e}: {:?}", self.lines.lock().unwrap())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The first line containing `needle`, waiting up to 10 s.
    pub async fn line(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no log line with {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends signal `name` (e.g. `TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits (up to 30 s) for a clean exit.
    pub async fn stop(mut self) {
        self.signal("TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{status}: {:?}",
                    self.lines.lock().unwrap()
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
