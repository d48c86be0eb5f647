//! Off-machine copies (`REMOTE_URL`) against real S3 servers on loopback: moto (fast,
//! in-memory, any credentials) and SeaweedFS (`weed mini` with an identities file, so a wrong
//! secret is refused). Both come from `bash .ci/setup-integrations.sh` into
//! `$DUCKSAFE_S3TOOLS` (default ~/.cache/ducksafe-s3tools); without them a case skips with a
//! message ([`crate::support::skip`]; under CI it fails instead).

mod drill;
mod faults;
mod packed;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, command};

/// The access key and secret the servers are started with.
pub const ACCESS_KEY: &str = "AKIDDUCKSAFETEST";
pub const SECRET: &str = "Sw0rdfish-s3cr3t-ducksafe-test-only";

fn tools_dir() -> PathBuf {
    std::env::var_os("DUCKSAFE_S3TOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/ducksafe-s3tools")
        },
        PathBuf::from,
    )
}

fn tool(case: &str, name: &str) -> Option<PathBuf> {
    let p = tools_dir().join("bin").join(name);
    if p.exists() {
        Some(p)
    } else {
        support::skip(
            case,
            &format!(
                "`{}` is missing: run `bash .ci/setup-integrations.sh`",
                p.display()
            ),
        );
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    python: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// moto on a free loopback port, with the bucket `ducksafe-test`.
    pub fn moto(case: &str) -> Option<Server> {
        let moto = tool(case, "moto_server")?;
        let python = tool(case, "python")?;
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = command(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "ducksafe-test".into(),
            python,
            _dir: dir,
        };
        s.wait_ready(Duration::from_secs(30));
        s.boto("s3.create_bucket(Bucket=BUCKET)");
        Some(s)
    }

    /// SeaweedFS (`weed mini`) on free loopback ports, credentials enforced, with the bucket.
    pub fn seaweed(case: &str) -> Option<Server> {
        let weed = tool(case, "weed")?;
        let python = tool(case, "python")?;
        let dir = tempfile::tempdir().unwrap();
        let identities = dir.path().join("s3.json");
        std::fs::write(
            &identities,
            format!(
                r#"{{"identities":[{{"name":"ducksafe","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let s3 = free_port();
        let mut args = vec![
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={s3}"),
            format!("-s3.config={}", identities.display()),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-bucket=ducksafe-test".into(),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "webdav.port",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        let child = command(&weed)
            .arg("mini")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "ducksafe-test".into(),
            python,
            _dir: dir,
        };
        s.wait_ready(Duration::from_secs(60));
        // Listening is not serving: wait until the bucket answers with the right credentials.
        let started = Instant::now();
        while !s.try_boto("s3.head_bucket(Bucket=BUCKET)") {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "SeaweedFS did not serve the bucket within 90 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Some(s)
    }

    fn wait_ready(&self, limit: Duration) {
        let addr = self.endpoint.trim_start_matches("http://").to_owned();
        let started = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < limit,
                "the S3 server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn script(&self, body: &str) -> String {
        format!(
            "import boto3\nBUCKET={:?}\ns3 = boto3.client('s3', endpoint_url={:?}, region_name='us-east-1', aws_access_key_id={ACCESS_KEY:?}, aws_secret_access_key={SECRET:?})\n{body}\n",
            self.bucket, self.endpoint
        )
    }

    fn try_boto(&self, body: &str) -> bool {
        command(&self.python)
            .args(["-c", &self.script(body)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs `body` with `s3` (a boto3 client with the right credentials) and `BUCKET` defined;
    /// returns its stdout.
    pub fn boto(&self, body: &str) -> String {
        let out = command(&self.python)
            .args(["-c", &self.script(body)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The configuration lines for a project whose remote is this server under `prefix`.
    pub fn config(&self, prefix: &str) -> String {
        format!(
            "REMOTE_URL: s3://{}/{prefix}\nREMOTE_ENDPOINT: {}\n",
            self.bucket, self.endpoint
        )
    }

    /// The keys under `prefix/`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.boto(&format!(
            "r = s3.list_objects_v2(Bucket=BUCKET, Prefix={:?})\nprint('\\n'.join(o['Key'] for o in r.get('Contents', [])))",
            format!("{prefix}/")
        ));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Kills the server now (a dead store in the middle of an upload).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that a command succeeded; returns its stdout (the report).
#[track_caller]
pub fn stdout_ok(out: &std::process::Output) -> String {
    support::assert_ok(out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment a ducksafe run against these servers gets.
pub fn creds() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("DUCKSAFE_REMOTE_RETRIES", "1"),
    ]
}
