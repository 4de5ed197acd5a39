//! RDS forces TLS: the pool's TLS mode against a real Postgres 15 started here with
//! `ssl=on` and a server certificate from a throwaway CA (openssl). The right CA
//! connects; the system roots (which do not hold that CA) are refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploysphere_adapters::pg::{ServerCert, connect_tls};

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &str, args: &[&str], dir: &Path) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// As the `postgres` user when we are root (postgres refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        command.arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgres is installed (make setup)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .collect();
    versions.sort();
    versions.pop().expect("a postgres version")
}

/// A CA and a server certificate for 127.0.0.1 and localhost, in `dir`.
fn certificates(dir: &Path) {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=DeploySphere test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
        dir,
    );
}

fn tls_postgres() -> (Server, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    certificates(&certs);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // The server's files must belong to the user it runs as.
    run(
        "chown",
        &["-R", "postgres:postgres", dir.path().to_str().unwrap()],
        dir.path(),
    );
    run("chmod", &["755", dir.path().to_str().unwrap()], dir.path());
    run(
        "chmod",
        &["600", certs.join("server.key").to_str().unwrap()],
        dir.path(),
    );
    let bin = postgres_bin();
    let status = as_postgres(&bin.join("initdb"))
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("initdb");
    assert!(status.success(), "initdb failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = as_postgres(&bin.join("postgres"))
        .args(["-D", data.to_str().unwrap(), "-p", &port.to_string()])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ])
        .args(["-c", "ssl=on"])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            certs.join("server.crt").display()
        ))
        .arg("-c")
        .arg(format!(
            "ssl_key_file={}",
            certs.join("server.key").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "postgres did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ca = certs.join("ca.crt");
    (
        Server {
            child,
            port,
            _dir: dir,
        },
        ca,
    )
}

#[tokio::test]
async fn the_pool_connects_over_tls_checking_the_servers_certificate() {
    let (server, ca) = tls_postgres();
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require",
        server.port
    );

    let pool = connect_tls(&url, 2, &ServerCert::CaFile(ca)).expect("a pool");
    let client = pool.get().await.expect("a TLS connection");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query");
    assert!(row.get::<_, bool>(0), "the session is encrypted");

    let untrusted = connect_tls(&url, 2, &ServerCert::SystemRoots).expect("a pool");
    assert!(
        untrusted.get().await.is_err(),
        "a certificate from an unknown CA is refused"
    );

    assert!(
        connect_tls(
            &url.replace("sslmode=require", "sslmode=disable"),
            2,
            &ServerCert::SystemRoots
        )
        .is_err(),
        "TLS mode needs sslmode=require"
    );
}
