//! The sandbox for user commands: bubblewrap as an unprivileged uid, new user, pid,
//! ipc, uts and network namespaces, read-only system folders, only the checkout
//! writable, a clean environment, network through slirp4netns with host loopback cut
//! off, and memory/CPU/process limits in a cgroup (v1 or v2, whichever is there).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use deploysphere_core::{Limits, LogStream};
use tokio::io::BufReader;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Where the sandbox helpers (`nsenter`, `ip`, `slirp4netns`) are found.
const HELPER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The unprivileged host uid/gid that runs the sandbox when the builder runs as root.
pub const SANDBOX_UID: u32 = 65534;
/// Where the build's tools folder is inside the sandbox.
pub const TOOLS: &str = "/tmp/tools";

/// Where the checkout appears inside the sandbox.
pub const WORKSPACE: &str = "/workspace";

/// How a user command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    /// The kernel killed a process of the build at the memory limit (in MB).
    OutOfMemory(u64),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(9) => write!(f, "was killed (SIGKILL: out of memory or over a limit)"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            Exit::TimedOut => write!(f, "ran past the build's time limit and was stopped"),
            Exit::OutOfMemory(mb) => write!(
                f,
                "ran out of memory: a process was killed at the build's {mb} MB limit"
            ),
        }
    }
}

/// The cgroup that holds every process of one build.
#[derive(Debug)]
enum Cgroup {
    V1(Vec<PathBuf>),
    V2(PathBuf),
}

impl Cgroup {
    /// Creates the build's cgroup with its limits; `None` when neither version has
    /// writable memory, cpu and pids controllers here.
    fn create(name: &str, limits: &Limits) -> Option<Cgroup> {
        let root = Path::new("/sys/fs/cgroup");
        let memory = limits.memory_mb * 1024 * 1024;
        let period = 100_000u64;
        let quota = limits.cpu_millis * period / 1000;
        let v1 = [
            (
                "memory",
                vec![("memory.limit_in_bytes", memory.to_string())],
            ),
            (
                "cpu",
                vec![
                    ("cpu.cfs_period_us", period.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            ),
            ("pids", vec![("pids.max", limits.max_processes.to_string())]),
        ];
        if v1
            .iter()
            .all(|(controller, _)| root.join(controller).join("cgroup.procs").exists())
        {
            let mut dirs = Vec::new();
            for (controller, settings) in &v1 {
                let dir = root.join(controller).join("deploysphere").join(name);
                if std::fs::create_dir_all(&dir).is_err() {
                    Cgroup::V1(dirs).remove();
                    return None;
                }
                dirs.push(dir.clone());
                for (file, value) in settings {
                    if std::fs::write(dir.join(file), value).is_err() {
                        Cgroup::V1(dirs).remove();
                        return None;
                    }
                }
            }
            // With swap accounting, cap memory + swap at the same amount: no swapping out.
            let memsw = root
                .join("memory/deploysphere")
                .join(name)
                .join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let _ = std::fs::write(memsw, memory.to_string());
            }
            return Some(Cgroup::V1(dirs));
        }
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if ["memory", "cpu", "pids"]
            .iter()
            .all(|c| controllers.split_whitespace().any(|x| x == *c))
        {
            let parent = root.join("deploysphere");
            let _ = std::fs::create_dir_all(&parent);
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory +cpu +pids");
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu +pids");
            let dir = parent.join(name);
            let ok = std::fs::create_dir_all(&dir).is_ok()
                && std::fs::write(dir.join("memory.max"), memory.to_string()).is_ok()
                && std::fs::write(dir.join("cpu.max"), format!("{quota} {period}")).is_ok()
                && std::fs::write(dir.join("pids.max"), limits.max_processes.to_string()).is_ok();
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            if ok {
                return Some(Cgroup::V2(dir));
            }
            let _ = std::fs::remove_dir(&dir);
        }
        None
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(dirs) => dirs.iter().map(|d| d.join("cgroup.procs")).collect(),
            Cgroup::V2(dir) => vec![dir.join("cgroup.procs")],
        }
    }

    /// How many processes the kernel killed in this cgroup for lack of memory.
    fn oom_kills(&self) -> u64 {
        let (file, key) = match self {
            Cgroup::V1(dirs) => {
                match dirs.iter().find(|d| d.starts_with("/sys/fs/cgroup/memory")) {
                    Some(dir) => (dir.join("memory.oom_control"), "oom_kill"),
                    None => return 0,
                }
            }
            Cgroup::V2(dir) => (dir.join("memory.events"), "oom_kill"),
        };
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix(key).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    fn describe(&self) -> &'static str {
        match self {
            Cgroup::V1(_) => "cgroup v1",
            Cgroup::V2(_) => "cgroup v2",
        }
    }

    /// SIGKILLs every process still in the cgroup.
    fn kill_all(&self) {
        for file in self.procs_files() {
            if let Ok(pids) = std::fs::read_to_string(&file) {
                for pid in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }

    fn remove(&self) {
        let dirs = match self {
            Cgroup::V1(dirs) => dirs.clone(),
            Cgroup::V2(dir) => vec![dir.clone()],
        };
        for dir in dirs {
            for _ in 0..20 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The first fd of the `--ro-bind-data` files in bwrap (3 and 4 are info and block).
const DATA_FD_BASE: usize = 5;

/// The small files of the sandbox's `/etc`, written from memory.
fn data_files() -> Vec<(&'static str, String)> {
    vec![
        ("/etc/resolv.conf", "nameserver 10.0.2.3\n".to_string()),
        (
            "/etc/hosts",
            "127.0.0.1 localhost\n::1 localhost\n".to_string(),
        ),
        (
            "/etc/passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\nbuild:x:{SANDBOX_UID}:{SANDBOX_UID}:build:/tmp/home:/bin/sh\n"
            ),
        ),
        ("/etc/group", format!("root:x:0:\nbuild:x:{SANDBOX_UID}:\n")),
    ]
}

/// A sandbox for one build's user commands.
pub struct Sandbox {
    memory_mb: u64,
    checkout: PathBuf,
    /// The build's tools folder (package manager shims and their downloads), writable,
    /// at [`TOOLS`] inside; it lasts from the install command to the build command.
    tools: Option<PathBuf>,
    env: Vec<(String, String)>,
    cgroup: Option<Cgroup>,
    as_root: bool,
}

impl Sandbox {
    /// Prepares the sandbox of a build: hands the checkout to the sandbox uid and sets up
    /// the cgroup. `env` is the whole environment the user commands will see.
    pub fn new(
        name: &str,
        checkout: &Path,
        tools: Option<&Path>,
        env: Vec<(String, String)>,
        limits: &Limits,
    ) -> anyhow::Result<Sandbox> {
        // SAFETY: geteuid(2) has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            chown_tree(checkout, SANDBOX_UID, SANDBOX_UID)?;
            if let Some(tools) = tools {
                chown_tree(tools, SANDBOX_UID, SANDBOX_UID)?;
            }
        }
        let cgroup = if as_root {
            Cgroup::create(name, limits)
        } else {
            None
        };
        Ok(Sandbox {
            memory_mb: limits.memory_mb,
            checkout: checkout.to_path_buf(),
            tools: tools.map(Path::to_path_buf),
            env,
            cgroup,
            as_root,
        })
    }

    /// A line for the build log saying which limits are enforced.
    pub fn describe(&self, limits: &Limits) -> String {
        if !self.as_root {
            return format!(
                "Sandbox: bubblewrap as this user, network via slirp4netns without host loopback; \
                 NOT enforced without root: other uid, private-range blocking, cgroup limits \
                 (only the {} s wall clock applies)",
                limits.timeout_seconds
            );
        }
        match &self.cgroup {
            Some(cgroup) => format!(
                "Sandbox: bubblewrap as uid {SANDBOX_UID}, network via slirp4netns (public internet only: no host loopback, private or link-local ranges), {} limits: {} MB memory, {:.1} CPUs, {} processes, {} s wall clock",
                cgroup.describe(),
                limits.memory_mb,
                limits.cpu_millis as f64 / 1000.0,
                limits.max_processes,
                limits.timeout_seconds
            ),
            None => format!(
                "Sandbox: bubblewrap as uid {SANDBOX_UID}, network via slirp4netns (public internet only); no cgroup controllers are writable here, so only the {} s wall-clock limit applies",
                limits.timeout_seconds
            ),
        }
    }

    fn bwrap_args(&self, workdir: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "--unshare-user",
            "--disable-userns",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--dir",
            "/tmp/home",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for path in [
            "/etc/ssl",
            "/etc/ca-certificates",
            "/etc/alternatives",
            "/etc/nsswitch.conf",
        ] {
            if Path::new(path).exists() {
                args.extend(["--ro-bind".into(), path.into(), path.into()]);
            }
        }
        for (i, (path, _)) in data_files().iter().enumerate() {
            args.extend([
                "--ro-bind-data".into(),
                (DATA_FD_BASE + i).to_string(),
                path.to_string(),
            ]);
        }
        if let Some(tools) = &self.tools {
            args.extend(["--bind".into(), tools.display().to_string(), TOOLS.into()]);
        }
        args.extend([
            "--bind".into(),
            self.checkout.display().to_string(),
            WORKSPACE.into(),
            "--remount-ro".into(),
            "/".into(),
            "--chdir".into(),
            workdir.into(),
        ]);
        for (key, value) in &self.env {
            args.extend(["--setenv".into(), key.clone(), value.clone()]);
        }
        args.extend([
            "--info-fd".into(),
            "3".into(),
            "--block-fd".into(),
            "4".into(),
        ]);
        args
    }

    /// bwrap's options (the environment's values among them) in a memory file for
    /// `--args`: a command line is readable by every local user in `/proc/<pid>/cmdline`,
    /// this file only through the sandbox's own fd. (bwrap takes the command itself only
    /// from its real command line: that is the project's build command, not a secret.)
    fn args_file(&self, workdir: &str) -> std::io::Result<OwnedFd> {
        let mut text = Vec::new();
        for arg in self.bwrap_args(workdir) {
            if arg.contains('\0') {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a sandbox argument holds a NUL byte",
                ));
            }
            text.extend_from_slice(arg.as_bytes());
            text.push(0);
        }
        // SAFETY: memfd_create takes a NUL-terminated name and flags; the fd is ours.
        let fd = unsafe { libc::memfd_create(c"bwrap-args".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, &text)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
        Ok(file.into())
    }

    /// Runs `command` with `sh -c` in `workdir` (a path under [`WORKSPACE`]), sending
    /// each output line to `lines`. Stops everything at `timeout`. Returns how the
    /// command ended and its own run time (sandbox start-up excluded).
    pub async fn run(
        &self,
        command: &str,
        workdir: &str,
        timeout: Duration,
        lines: mpsc::Sender<(LogStream, String)>,
    ) -> anyhow::Result<(Exit, Duration)> {
        let (info_read, info_write) = pipe()?;
        let (block_read, block_write) = pipe()?;
        // Each --ro-bind-data reads its file from a pipe, fds 5.. in the child.
        let mut data_pipes = Vec::new();
        for (_, content) in data_files() {
            let (read, write) = pipe()?;
            let mut write = std::fs::File::from(write);
            std::io::Write::write_all(&mut write, content.as_bytes())?;
            drop(write);
            data_pipes.push(read);
        }
        let oom_kills_before = self.cgroup.as_ref().map_or(0, Cgroup::oom_kills);
        let args_file = self.args_file(workdir)?;
        let args_fd = DATA_FD_BASE + data_pipes.len();

        let mut launcher = String::from("set -e; ");
        if let Some(cgroup) = &self.cgroup {
            for file in cgroup.procs_files() {
                launcher.push_str(&format!("echo $$ > '{}'; ", file.display()));
            }
        }
        launcher.push_str("exec \"$@\"");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&launcher).arg("sandbox");
        if self.as_root {
            cmd.args([
                "setpriv",
                &format!("--reuid={SANDBOX_UID}"),
                &format!("--regid={SANDBOX_UID}"),
                "--clear-groups",
            ]);
        }
        cmd.arg("bwrap")
            .args(["--args".to_string(), args_fd.to_string(), "--".into()])
            .args(["/bin/sh", "-c", command]);
        cmd.env_clear().env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let child_fds: Vec<i32> = [info_write.as_raw_fd(), block_read.as_raw_fd()]
            .into_iter()
            .chain(data_pipes.iter().map(|p| p.as_raw_fd()))
            .chain([args_file.as_raw_fd()])
            .collect();
        pass_fds(&mut cmd, child_fds);
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("could not start bubblewrap: {e}"))?;
        drop(info_write);
        drop(block_read);
        drop(data_pipes);
        drop(args_file);

        let info = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let mut file = std::fs::File::from(info_read);
            let mut buf = [0u8; 4096];
            // bwrap writes the JSON then keeps the fd open: read until it parses.
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                    break;
                }
            }
            Ok::<_, std::io::Error>(text)
        })
        .await??;
        let child_pid = serde_json::from_str::<serde_json::Value>(&info)
            .ok()
            .and_then(|v| v.get("child-pid").and_then(|p| p.as_i64()));
        let Some(child_pid) = child_pid else {
            let status = child.wait().await?;
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr).await;
            }
            anyhow::bail!("the sandbox did not start ({status}): {}", stderr.trim());
        };
        // bwrap reports the child before the child has set up its namespaces (loopback
        // included): slirp4netns may only touch the network once the child waits on
        // the block fd, or the two race on netlink.
        if !wait_until_blocked(child_pid, 4).await {
            eprintln!(
                "[builder] the sandbox was not seen waiting for its network; starting it anyway"
            );
        }
        let mut slirp = start_slirp(child_pid).await?;
        if self.as_root {
            restrict_egress(child_pid).await?;
        }
        // Network is up: let the command run.
        let mut block_write = std::fs::File::from(block_write);
        std::io::Write::write_all(&mut block_write, b"1")?;
        drop(block_write);
        let command_started = std::time::Instant::now();

        let stdout = child
            .stdout
            .take()
            .map(|s| pump(s, LogStream::Stdout, lines.clone()));
        let stderr = child
            .stderr
            .take()
            .map(|s| pump(s, LogStream::Stderr, lines.clone()));
        let exit = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                let status = status?;
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    _ => Exit::Signal(0),
                }
            }
            Err(_) => {
                self.kill(&mut child).await;
                Exit::TimedOut
            }
        };
        let command_time = command_started.elapsed();
        let mut exit = exit;
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
            let failed = !matches!(exit, Exit::Code(0) | Exit::TimedOut);
            if failed && cgroup.oom_kills() > oom_kills_before {
                exit = Exit::OutOfMemory(self.memory_mb);
            }
        }
        let _ = slirp.kill().await;
        for pump in [stdout, stderr].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
        }
        Ok((exit, command_time))
    }

    async fn kill(&self, child: &mut Child) {
        let _ = child.start_kill();
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
        let _ = child.wait().await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
            cgroup.remove();
        }
    }
}

/// Makes `fds` the child's fds 3, 4, ... and marks every other inherited fd
/// close-on-exec, so nothing else of the builder (Kafka sockets, wakeup pipes) leaks
/// into the sandbox.
fn pass_fds(cmd: &mut Command, fds: Vec<i32>) {
    assert!(fds.len() <= 16, "at most 16 fds");
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let max_fd = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(65_536) as libc::c_int
    } else {
        4096
    };
    // SAFETY: only fcntl(2), dup2(2) and close_range(2), which are async-signal-safe,
    // run between fork and exec; the fd list was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Move every source above the targets first so no dup2 clobbers a source.
            let mut moved = [0i32; 16];
            for (slot, source) in moved.iter_mut().zip(fds.iter()) {
                *slot = libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, 100);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, source) in (3..).zip(moved.iter().take(fds.len())) {
                if libc::dup2(*source, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            let first = 3 + fds.len() as libc::c_uint;
            if libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                // Before Linux 5.11 (or under a seccomp profile that refuses it): mark
                // each possible fd one by one.
                for fd in first as libc::c_int..max_fd {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array; we own them from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Address ranges a build may not reach: private networks, link-local (cloud metadata
/// at 169.254.169.254), carrier-grade NAT, benchmarking, multicast and reserved space.
/// slirp4netns's own 10.0.2.0/24 stays reachable: its route is more specific.
pub const BLOCKED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// Adds `unreachable` routes for [`BLOCKED_RANGES`] in the sandbox's network
/// namespace, so a build reaches the public internet (package registries) and
/// nothing on the host's networks.
async fn restrict_egress(child_pid: i64) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    // Helpers get no environment of ours (it holds the Redis token, say).
    let mut ip = Command::new("nsenter")
        .env_clear()
        .env("PATH", HELPER_PATH)
        .arg(format!("--net=/proc/{child_pid}/ns/net"))
        .args(["ip", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not restrict the sandbox network (nsenter/ip): {e}"))?;
    let script: String = BLOCKED_RANGES
        .iter()
        .map(|range| format!("route add unreachable {range}\n"))
        .collect();
    if let Some(mut stdin) = ip.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let output = ip.wait_with_output().await?;
    if !output.status.success() {
        anyhow::bail!(
            "could not restrict the sandbox network: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Waits (at most 5 s) until process `pid` sits in `read(fd, ...)`; false when it
/// could not be seen there.
async fn wait_until_blocked(pid: i64, fd: i32) -> bool {
    let expected = format!("{} 0x{fd:x} ", libc::SYS_read);
    let path = format!("/proc/{pid}/syscall");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(&path) {
            Ok(state) if state.starts_with(&expected) => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(_) => return false,
        }
    }
    false
}

/// Starts slirp4netns on the sandbox's network namespace and waits until it is ready.
async fn start_slirp(child_pid: i64) -> anyhow::Result<Child> {
    let (ready_read, ready_write) = pipe()?;
    let ready_fd = ready_write.as_raw_fd();
    let mut cmd = Command::new("slirp4netns");
    cmd.env_clear().env("PATH", HELPER_PATH);
    cmd.args([
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        "--ready-fd=3",
        "--netns-type=path",
    ])
    .arg(format!("/proc/{child_pid}/ns/net"))
    .arg("tap0")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    pass_fds(&mut cmd, vec![ready_fd]);
    let mut slirp = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not start slirp4netns: {e}"))?;
    drop(ready_write);
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 1];
        std::fs::File::from(ready_read)
            .read(&mut buf)
            .map(|n| n == 1)
    });
    match tokio::time::timeout(Duration::from_secs(10), ready).await {
        Ok(Ok(Ok(true))) => Ok(slirp),
        _ => {
            let _ = slirp.kill().await;
            let mut stderr = String::new();
            if let Some(mut err) = slirp.stderr.take() {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr).await;
            }
            anyhow::bail!("the sandbox network did not come up: {}", stderr.trim())
        }
    }
}

/// Forwards each line of a child's output. A line is cut a little past
/// [`MAX_MESSAGE_BYTES`](deploysphere_core::logs::MAX_MESSAGE_BYTES) while it is read,
/// so no output, however long its lines, makes the builder hold much more than that.
fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    stream: LogStream,
    lines: mpsc::Sender<(LogStream, String)>,
) -> tokio::task::JoinHandle<()> {
    use deploysphere_core::logs::MAX_MESSAGE_BYTES;
    use tokio::io::AsyncBufReadExt;
    // Keep more than a log line holds: secrets are masked on the whole kept text
    // before it is cut to MAX_MESSAGE_BYTES, so a secret near the cut never leaks in
    // part (env values are at most 32 KiB).
    const KEEP: usize = MAX_MESSAGE_BYTES + 48 * 1024;
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut line: Vec<u8> = Vec::new();
        let mut cut = 0usize;
        loop {
            let (used, complete) = match reader.fill_buf().await {
                Ok(chunk) if !chunk.is_empty() => {
                    let newline = chunk.iter().position(|b| *b == b'\n');
                    let part = &chunk[..newline.unwrap_or(chunk.len())];
                    let room = KEEP.saturating_sub(line.len());
                    line.extend_from_slice(&part[..part.len().min(room)]);
                    cut += part.len().saturating_sub(room);
                    (
                        part.len() + usize::from(newline.is_some()),
                        newline.is_some(),
                    )
                }
                _ => break,
            };
            reader.consume(used);
            if complete
                && lines
                    .send((stream, finish_line(&mut line, &mut cut)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if !line.is_empty() || cut > 0 {
            let _ = lines.send((stream, finish_line(&mut line, &mut cut))).await;
        }
    })
}

fn finish_line(line: &mut Vec<u8>, cut: &mut usize) -> String {
    while line.last().is_some_and(|b| *b == b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    if *cut > 0 {
        text.push_str(&format!(" […{cut} more bytes cut]"));
    }
    line.clear();
    *cut = 0;
    text
}

/// chown -R without following symlinks.
/// Hands folders that the builder put into the app folder (`paths`, relative to
/// `root`) to the sandbox's uid, as [`Sandbox::new`] does the checkout.
pub fn hand_over(root: &Path, paths: &[&str]) -> std::io::Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    for path in paths {
        chown_tree(&root.join(path), SANDBOX_UID, SANDBOX_UID)?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
