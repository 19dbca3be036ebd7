//! Starts the real `gridlake` binary on port 0 and talks HTTP to it.
//!
//! Every test gets its own [`Server`] with its own temporary directory: the data
//! directory lives in `<tmp>/data`, the server's stderr (its log) in
//! `<tmp>/server-N.log` (one file per start, so a restart's log can be read on its own).
//! Stopping with SIGTERM, killing with SIGKILL and starting again on the same data
//! directory are what the durability tests are made of.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a start (including WAL replay) may take before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop (flush and persist) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Every HTTP request of the tests; generous for a debug build on two cores.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// What the server prints on stdout when it is ready, followed by the address.
const READY_PREFIX: &str = "gridlake listening on http://";

/// The path of the binary under test, built by cargo for this test target.
pub(crate) fn gridlake_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gridlake")
}

/// How to start a server: extra environment variables and an optional config file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Options {
    env: Vec<(String, String)>,
    config_toml: Option<String>,
}

impl Options {
    /// Sets an environment variable for the server process (e.g. `GRIDLAKE_HTTP_MAX_BODY_SIZE`).
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes `toml` to a file and passes it with `--config`.
    pub(crate) fn config(mut self, toml: &str) -> Self {
        self.config_toml = Some(toml.to_owned());
        self
    }
}

/// `gridlake` with the test's environment only (its `GRIDLAKE_*` variables and config
/// file), in its temporary directory, on its data directory.
fn command(tmp: &Path, options: &Options) -> Command {
    let mut cmd = Command::new(gridlake_bin());
    // The tests must not depend on the environment they happen to run in.
    for (key, _) in std::env::vars() {
        if key.starts_with("GRIDLAKE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("GRIDLAKE_DATA_DIR", tmp.join("data"));
    if options.config_toml.is_some() {
        cmd.env("GRIDLAKE_CONFIG", tmp.join("gridlake.toml"));
    }
    cmd.envs(options.env.iter().map(|(k, v)| (k, v)))
        .current_dir(tmp);
    cmd
}

/// Runs `gridlake token create` with `args` on the test's data directory and returns the
/// plain token it prints.
async fn create_token(tmp: &Path, options: &Options, args: &[&str]) -> String {
    let output = command(tmp, options)
        .args(["token", "create", "--name", "e2e"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run gridlake token create");
    assert!(
        output.status.success(),
        "gridlake token create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("token create prints JSON");
    printed["token"].as_str().expect("token").to_owned()
}

/// A running (or stopped) `gridlake serve` process and its directories.
#[derive(Debug)]
pub(crate) struct Server {
    // Declared before `tmp` so the process dies before its directory is removed.
    child: Option<Child>,
    base: String,
    options: Options,
    starts: usize,
    http: reqwest::Client,
    admin_token: String,
    tmp: TempDir,
}

impl Server {
    /// Starts a server with default settings on a fresh data directory.
    pub(crate) async fn start() -> Server {
        Server::start_with(Options::default()).await
    }

    /// Starts a server with `options` on a fresh data directory.
    pub(crate) async fn start_with(options: Options) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("gridlake-e2e-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(tmp.path().join("data")).expect("create data dir");
        if let Some(toml) = &options.config_toml {
            std::fs::write(tmp.path().join("gridlake.toml"), toml).expect("write config");
        }
        // Every request of the tests goes through authentication, with an admin token
        // made the way the README makes the first one.
        let token = create_token(tmp.path(), &options, &["--scope", "admin"]).await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .expect("build HTTP client");
        let mut server = Server {
            admin_token: token,
            child: None,
            base: String::new(),
            options,
            starts: 0,
            http,
            tmp,
        };
        server.start_again().await;
        server
    }

    /// Starts the process again on the same data directory (after [`Server::stop`] or
    /// [`Server::kill`]) and waits for its ready line. The port changes.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        self.starts += 1;
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).expect("create server log");
        let mut cmd = command(self.tmp.path(), &self.options);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--http-addr")
            .arg("127.0.0.1:0");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn gridlake serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = child.wait().await;
                panic!(
                    "gridlake exited before its ready line ({status:?}); log:\n{}",
                    self.log()
                );
            }
            Ok(Err(e)) => panic!("reading gridlake's stdout: {e}; log:\n{}", self.log()),
            Err(_) => panic!(
                "no ready line within {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            ),
        };
        let addr = line.strip_prefix(READY_PREFIX).unwrap_or_else(|| {
            panic!(
                "first stdout line must be `{READY_PREFIX}ADDR` (logs go to stderr), got {line:?}"
            )
        });
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "ready line must name the bound address, got {line:?}"
        );
        self.base = format!("http://{addr}");
        // Keep the pipe drained so the process can never block on a full stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Sends SIGTERM and waits for the process to exit with status 0.
    pub(crate) async fn stop(&mut self) {
        self.stop_with(Signal::SIGTERM).await;
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit with status 0.
    pub(crate) async fn interrupt(&mut self) {
        self.stop_with(Signal::SIGINT).await;
    }

    async fn stop_with(&mut self, signal: Signal) {
        let status = self.signal_and_wait(signal).await;
        assert!(
            status.success(),
            "gridlake must exit 0 after {signal}, got {status:?}; log:\n{}",
            self.log()
        );
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub(crate) async fn kill(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        child.start_kill().expect("send SIGKILL");
        tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .expect("killed process did not go away")
            .expect("wait for killed process");
    }

    async fn signal_and_wait(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        let pid = child.id().expect("running child has a pid");
        let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
        kill(pid, signal).expect("send signal");
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => status.expect("wait for gridlake"),
            Err(_) => panic!(
                "gridlake did not exit within {STOP_TIMEOUT:?} of {signal}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Sets the environment variable `key` of the next start ([`Server::start_again`])
    /// to `value`, or removes it with `None`.
    pub(crate) fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.options.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.options.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// `http://127.0.0.1:PORT` of the running process.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// `path` (starting with `/`, may carry a query) on the running server.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The data directory, the same across restarts.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join(format!("server-{}.log", self.starts))
    }

    /// The stderr of the current (or last) process, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The shared HTTP client.
    /// The admin API token every request of [`Server::http`] carries.
    pub(crate) fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// `gridlake token create` with `args` (`--scope write --site-id 1`): the plain token.
    pub(crate) async fn create_token(&self, args: &[&str]) -> String {
        create_token(self.tmp.path(), &self.options, args).await
    }

    /// `gridlake` with this server's environment, config and data directory.
    pub(crate) fn command(&self) -> Command {
        command(self.tmp.path(), &self.options)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs `body` to `path` and returns the status and the response body.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, String) {
        let response = self
            .http
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        (status, response.text().await.expect("response body"))
    }

    /// POSTs `body` to `path` and asserts 204.
    pub(crate) async fn write_ok(&self, path: &str, body: impl Into<reqwest::Body>) {
        let (status, text) = self.post(path, body).await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "write to {path} must answer 204, body: {text}"
        );
    }

    /// POSTs line protocol to `/api/v3/write_lp` (ns precision) and asserts 204.
    pub(crate) async fn write_lp(&self, body: &str) {
        self.write_ok("/api/v3/write_lp?db=test", body.to_owned())
            .await;
    }

    /// Runs `sql` with `GET /api/v1/sql?q=...&format=...` and returns the raw response.
    pub(crate) async fn sql_response(&self, sql: &str, format: &str) -> reqwest::Response {
        let url =
            Url::parse_with_params(&self.url("/api/v1/sql"), &[("q", sql), ("format", format)])
                .expect("SQL URL");
        self.http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /api/v1/sql for {sql:?}: {e}"))
    }

    /// Runs `sql` and returns the status and body (whatever the status).
    pub(crate) async fn sql_status(&self, sql: &str) -> (StatusCode, String) {
        let response = self.sql_response(sql, "json").await;
        let status = response.status();
        (status, response.text().await.expect("response body"))
    }

    /// Runs `sql`, asserts 200 and returns the JSON rows.
    pub(crate) async fn sql(&self, sql: &str) -> Vec<Map<String, Value>> {
        let (status, body) = self.sql_status(sql).await;
        assert_eq!(status, StatusCode::OK, "query {sql:?} failed: {body}");
        parse_json_rows(&body)
    }

    /// `SELECT count(*)` of `table`.
    pub(crate) async fn count(&self, table: &str) -> i64 {
        let rows = self
            .sql(&format!("SELECT count(*) AS n FROM {table}"))
            .await;
        rows[0]["n"].as_i64().expect("count is an integer")
    }

    /// Does `table` exist (per `SHOW TABLES`)?
    pub(crate) async fn has_table(&self, table: &str) -> bool {
        let rows = self.sql("SHOW TABLES").await;
        rows.iter()
            .any(|r| r.get("table_name") == Some(&Value::from(table)))
    }

    /// GETs `path` and returns status and body.
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        (status, response.text().await.expect("response body"))
    }
}

/// Parses the default SQL output (a JSON array of row objects).
pub(crate) fn parse_json_rows(body: &str) -> Vec<Map<String, Value>> {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("SQL json output must be JSON ({e}): {body}"));
    let Value::Array(rows) = value else {
        panic!("SQL json output must be an array: {body}");
    };
    rows.into_iter()
        .map(|row| match row {
            Value::Object(map) => map,
            other => panic!("each row must be a JSON object, got {other}"),
        })
        .collect()
}

/// Parses a JSON error body and returns it (asserting it is an object with `error`).
pub(crate) fn parse_error(body: &str) -> Map<String, Value> {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body must be JSON ({e}): {body}"));
    let Value::Object(map) = value else {
        panic!("error body must be a JSON object: {body}");
    };
    assert!(
        map.get("error")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "error body must carry a non-empty \"error\" string: {body}"
    );
    map
}

/// Gzip-compresses `data`.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// Every file under `dir` (recursively) whose name ends with `suffix`.
pub(crate) fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// An `i64` column value of a JSON row (e.g. `CAST(time AS BIGINT)`).
pub(crate) fn int(row: &Map<String, Value>, column: &str) -> i64 {
    row.get(column)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("column {column} must be an integer in {row:?}"))
}

/// An `f64` column value of a JSON row.
pub(crate) fn float(row: &Map<String, Value>, column: &str) -> f64 {
    row.get(column)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("column {column} must be a number in {row:?}"))
}

/// A string column value of a JSON row.
pub(crate) fn string<'a>(row: &'a Map<String, Value>, column: &str) -> &'a str {
    row.get(column)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("column {column} must be a string in {row:?}"))
}

/// Is the column null in a JSON row (absent or `null`: JSON writers may omit nulls)?
pub(crate) fn is_null(row: &Map<String, Value>, column: &str) -> bool {
    row.get(column).is_none_or(Value::is_null)
}

/// Whether `python3` can import what an independent peer needs (`imports`, a Python
/// statement). When it cannot, the test is skipped with a message naming `what` and
/// how to install it (`install`), except where peers are required: scripts/test.sh
/// installs them and sets `GRIDLAKE_REQUIRE_PEERS`, CI sets `CI=true`, and there a skip
/// would hide a broken install, so the test fails instead.
pub(crate) fn python_peer_available(imports: &str, what: &str, install: &str) -> bool {
    let check = std::process::Command::new("python3")
        .args(["-c", imports])
        .output();
    let missing = match check {
        Err(e) => format!("python3 cannot be run: {e}"),
        Ok(out) if !out.status.success() => format!(
            "python3 lacks {what} ({}); install it with `python3 -m pip install {install}` \
             or run scripts/test.sh",
            // The traceback's last line: "ModuleNotFoundError: No module named ...".
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        ),
        Ok(_) => return true,
    };
    let required = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var_os("GRIDLAKE_REQUIRE_PEERS").is_some();
    assert!(
        !required,
        "{what} is required here (CI=true or GRIDLAKE_REQUIRE_PEERS) and cannot run: {missing}"
    );
    eprintln!("SKIPPED: {missing}");
    false
}
