//! Throwaway PostgreSQL 15 and MariaDB 10.11 servers for the CDC tests: each one a
//! private instance in its own temp dir under `/tmp`, listening on 127.0.0.1 and a free
//! port, stopped on drop. Nothing here uses the system clusters Debian's packages may
//! have started; `scripts/test.sh` installs the packages.
//!
//! Both servers refuse to run as root, and the tests do run as root (here and in CI),
//! so each server runs as its own system user (`postgres`, `mysql`): the temp dir is
//! made 0755 (the user must traverse it) and chowned to that user. Tests themselves
//! talk to the servers over TCP as the database superuser, which works from any Unix
//! user: Postgres with `trust` auth, MariaDB with a password.
//!
//! Waits poll under a deadline; there are no fixed sleeps. `kill9` and `restart` exist
//! so a test can take the database away (or bounce it) in the middle of a stream;
//! `restart` reuses the data dir and the port, so DSNs handed out before stay valid.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// How long a server may take to start or stop before the test fails.
const SERVER_WAIT: Duration = Duration::from_secs(90);

/// Lines of a server's log printed when it fails to start.
const LOG_TAIL_LINES: usize = 40;

/// A private PostgreSQL 15 server with `wal_level=logical`, superuser `postgres`
/// (trust auth, also for replication connections from 127.0.0.1).
pub struct Postgres {
    dir: tempfile::TempDir,
    /// Directory of `initdb`, `pg_ctl`, `psql`.
    bin: PathBuf,
    port: u16,
    /// False after [`Postgres::kill9`] until the next [`Postgres::restart`].
    running: bool,
}

impl Postgres {
    /// initdb in a new temp dir, then starts the server and waits until it accepts
    /// connections.
    pub fn start() -> Postgres {
        Postgres::start_configured(|_| {})
    }

    /// Like [`Postgres::start`], with `configure` called on the data dir after initdb and
    /// before the first start (to append to `postgresql.conf`, replace `pg_hba.conf`,
    /// put certificates there); what it writes is then handed to the server's user.
    pub fn start_configured(configure: impl FnOnce(&Path)) -> Postgres {
        assert_root();
        let bin = pg_bin_dir();
        let dir = private_dir("sluice-pg-", "postgres");
        let port = free_port();
        let pg = Postgres {
            dir,
            bin,
            port,
            running: false,
        };
        let data = pg.data_dir();
        let mut initdb = as_user("postgres", &pg.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres"])
            .args(["--encoding", "UTF8", "--locale", "C", "--no-sync"]);
        run(&mut initdb, "initdb");
        // fsync off but synchronous_commit on: a commit is a write(2) into the page
        // cache, cheap, and survives `kill9` (the machine does not crash, the server
        // does), so a test may count on every acknowledged commit after a restart.
        let conf = format!(
            "\n# sluice test harness\n\
             wal_level = logical\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = off\n\
             synchronous_commit = on\n\
             full_page_writes = off\n\
             shared_buffers = 256MB\n\
             max_connections = 200\n\
             wal_sender_timeout = 60s\n",
            socket_dir = pg.dir.path().display(),
        );
        append(&data.join("postgresql.conf"), &conf);
        configure(&data);
        chown_r("postgres", &data);
        let mut pg = pg;
        pg.start_server();
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (no password: trust auth).
    pub fn dsn(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` in database `db` with psql over TCP, failing the test on any error
    /// (`ON_ERROR_STOP`); returns stdout trimmed, unaligned, tuples only (`|` between
    /// columns, one row a line).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("spawn psql");
        assert!(
            out.status.success(),
            "psql -d {db} -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// SIGKILL of the postmaster and every backend: no shutdown checkpoint, crash
    /// recovery on the next start. The stale `postmaster.pid` is removed so that
    /// [`Postgres::restart`] can start the server again.
    pub fn kill9(&mut self) {
        if !self.running {
            return;
        }
        let pid_file = self.data_dir().join("postmaster.pid");
        let postmaster: i32 = std::fs::read_to_string(&pid_file)
            .expect("postmaster.pid of a running server")
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("pid on the first line of postmaster.pid");
        // Backends are listed before the postmaster dies: afterwards they are
        // reparented and can no longer be told apart from other processes.
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        for &pid in &pids {
            // SAFETY: kill(2) of processes of the server we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        wait_for("killed postgres processes to exit", SERVER_WAIT, || {
            pids.iter().all(|&pid| !is_alive(pid)).then_some(())
        });
        // A zombie postmaster (nothing reaps it in some containers) still answers
        // kill(pid, 0), so the lock files naming it would make the next postmaster
        // refuse to start.
        let _ = std::fs::remove_file(pid_file);
        let socket_lock = format!(".s.PGSQL.{}.lock", self.port);
        let _ = std::fs::remove_file(self.dir.path().join(socket_lock));
        self.running = false;
    }

    /// A clean stop (`pg_ctl stop -m fast`, skipped after [`Postgres::kill9`]), then a
    /// start on the same data dir and port.
    pub fn restart(&mut self) {
        if self.running {
            self.pg_ctl_stop("fast")
                .unwrap_or_else(|e| panic!("pg_ctl stop -m fast: {e}"));
            self.running = false;
        }
        self.start_server();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The tail of the server's log (for a failing test's message).
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        log_tail(&self.log_path())
    }

    /// `pg_ctl start -w`: pg_ctl itself polls the server under the `-t` deadline and
    /// notices a postmaster that exits during startup.
    fn start_server(&mut self) {
        let mut pg_ctl = as_user("postgres", &self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args([
                "-w",
                "-t",
                &SERVER_WAIT.as_secs().to_string(),
                "-s",
                "start",
            ]);
        let out = output(&mut pg_ctl, "pg_ctl start");
        if !out.status.success() {
            panic!(
                "postgres did not start: {}\n--- tail of {} ---\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_path().display(),
                log_tail(&self.log_path())
            );
        }
        self.running = true;
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let mut pg_ctl = as_user("postgres", &self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", &SERVER_WAIT.as_secs().to_string()])
            .args(["-s", "stop"]);
        let out = output(&mut pg_ctl, "pg_ctl stop");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running && self.pg_ctl_stop("immediate").is_err() {
            self.kill9();
        }
    }
}

/// Postgres 15's server binaries: Debian's versioned dir, else whatever `pg_config`
/// reports.
fn pg_bin_dir() -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").exists() {
        return debian.to_path_buf();
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("postgresql 15 (scripts/test.sh installs it): no initdb, no pg_config");
    assert!(out.status.success(), "pg_config --bindir failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A private MariaDB server with the binlog on (`ROW`, `FULL` image and metadata,
/// `server-id=1`), reachable as `root` with [`MariaDb::PASSWORD`] over TCP.
pub struct MariaDb {
    dir: tempfile::TempDir,
    port: u16,
    /// Extra `mariadbd` options from [`MariaDb::start_with`], kept for restarts.
    options: Vec<String>,
    /// The `mariadbd` process itself (started as `mysql` directly, not through a
    /// wrapper, so that killing it kills the server). `None` after `kill9`.
    child: Option<Child>,
}

impl MariaDb {
    /// Root's password, for TCP logins from any host (`root`@`%` exists too).
    pub const PASSWORD: &'static str = "sluice";

    pub fn start() -> MariaDb {
        MariaDb::start_with(&[])
    }

    /// Like [`MariaDb::start`], with extra `mariadbd` options after the harness's own
    /// (a later option wins, e.g. `--binlog-format=MIXED`). Restarts keep them.
    pub fn start_with(options: &[&str]) -> MariaDb {
        assert_root();
        let dir = private_dir("sluice-mariadb-", "mysql");
        let mut db = MariaDb {
            port: free_port(),
            options: options.iter().map(|o| o.to_string()).collect(),
            child: None,
            dir,
        };
        db.install();
        db.spawn();
        // Fresh from install: root@localhost has no password and the socket is the
        // only way in.
        db.wait_ready(|db| db.socket_client());
        db.setup_root();
        db
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root:PASSWORD@127.0.0.1:PORT/DB`.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "mysql://root:{}@127.0.0.1:{}/{db}",
            MariaDb::PASSWORD,
            self.port
        )
    }

    /// Runs `sql` (one or more statements) with the `mariadb` client over TCP as root,
    /// in database `db` (none when empty), failing the test on any error; returns
    /// stdout trimmed, without column names, tab-separated, `NULL` for null.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut client = self.tcp_client();
        if !db.is_empty() {
            client.arg(format!("--database={db}"));
        }
        let out = client
            .args(["-N", "-B", "-e", sql])
            .output()
            .expect("spawn mariadb");
        assert!(
            out.status.success(),
            "mariadb {db} -e {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_db(&self, name: &str) {
        self.sql("", &format!("CREATE DATABASE `{name}`"));
    }

    /// SIGKILL of `mariadbd`: no shutdown, InnoDB and binlog recovery on the next start.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A clean shutdown (SIGTERM, skipped after [`MariaDb::kill9`]), then a start on
    /// the same data dir, port and options.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let exited = wait_for("mariadbd to shut down", SERVER_WAIT, || {
                child.try_wait().expect("wait mariadbd")
            });
            assert!(exited.success(), "mariadbd shut down with {exited}");
        }
        self.spawn();
        self.wait_ready(|db| db.tcp_client());
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn err_log(&self) -> PathBuf {
        self.dir.path().join("err.log")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn install(&self) {
        // A private tmpdir: installs running side by side under the shared /tmp fail
        // on each other's temporary tables.
        for sub in ["binlog", "tmp"] {
            let path = self.dir.path().join(sub);
            std::fs::create_dir(&path).expect("create dir in the temp dir");
            chown_r("mysql", &path);
        }
        let mut install = as_user("mysql", Path::new("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--tmpdir={}/tmp", self.dir.path().display()))
            .args(["--user=mysql", "--auth-root-authentication-method=normal"])
            .arg("--skip-test-db");
        run(&mut install, "mariadb-install-db");
    }

    fn spawn(&mut self) {
        let dir = self.dir.path().display().to_string();
        let (uid, gid) = user_ids("mysql");
        let mariadbd = if Path::new("/usr/sbin/mariadbd").exists() {
            "/usr/sbin/mariadbd"
        } else {
            "mariadbd"
        };
        // innodb-flush-log-at-trx-commit=2 (not 0): the redo log is written, not
        // synced, at each commit, so as with the binlog (sync-binlog=0) a commit survives
        // `kill9`; with 0 InnoDB could lose commits the binlog (and so CDC) still has.
        let child = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={dir}/data"))
            .arg(format!("--tmpdir={dir}/tmp"))
            .arg(format!("--socket={dir}/sock"))
            .arg(format!("--pid-file={dir}/mariadbd.pid"))
            .arg(format!("--log-error={dir}/err.log"))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg("--server-id=1")
            .arg(format!("--log-bin={dir}/binlog/mysql-bin"))
            .args(["--binlog-format=ROW", "--binlog-row-image=FULL"])
            .arg("--binlog-row-metadata=FULL")
            .args(["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"])
            .args(["--innodb-buffer-pool-size=256M", "--max-connections=200"])
            .args(&self.options)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (scripts/test.sh installs mariadb-server)");
        self.child = Some(child);
    }

    /// Polls `SELECT 1` through `client` until it answers; fails with the tail of the
    /// error log as soon as `mariadbd` exits, or at the deadline.
    fn wait_ready(&mut self, client: impl Fn(&MariaDb) -> Command) {
        wait_for("mariadbd to accept connections", SERVER_WAIT, || {
            let child = self.child.as_mut().expect("mariadbd spawned");
            if let Some(status) = child.try_wait().expect("wait mariadbd") {
                panic!(
                    "mariadbd exited with {status} during startup\n--- tail of {} ---\n{}",
                    self.err_log().display(),
                    log_tail(&self.err_log())
                );
            }
            let ok = client(self)
                .args(["-N", "-B", "-e", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then_some(())
        });
    }

    /// Gives root [`MariaDb::PASSWORD`] and adds `root`@`%`, so the CDC connector can
    /// log in over TCP as a real user. (`root`@HOSTNAME is ignored under
    /// `--skip-name-resolve`.) Kept out of the binlog (`sql_log_bin=0`): a test's
    /// binlog starts with its own statements.
    fn setup_root(&self) {
        let password = MariaDb::PASSWORD;
        let mut sql = format!(
            "SET sql_log_bin = 0;\n\
             CREATE USER 'root'@'%' IDENTIFIED BY '{password}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n"
        );
        for host in ["127.0.0.1", "::1", "localhost"] {
            sql += &format!("ALTER USER IF EXISTS 'root'@'{host}' IDENTIFIED BY '{password}';\n");
        }
        let out = self
            .socket_client()
            .args(["-e", &sql])
            .output()
            .expect("spawn mariadb");
        assert!(
            out.status.success(),
            "setting root's password failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The client over the Unix socket as root without a password (only before
    /// [`MariaDb::setup_root`]).
    fn socket_client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--protocol=SOCKET", "--user=root", "--connect-timeout=10"])
            .stdin(Stdio::null());
        c
    }

    fn tcp_client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .args(["--protocol=TCP", "--host=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .args(["--user=root", "--connect-timeout=10"])
            .arg(format!("--password={}", MariaDb::PASSWORD))
            .stdin(Stdio::null());
        c
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn assert_root() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the database harness runs servers as their own users with runuser: run as root"
    );
}

/// A temp dir under `/tmp` (whose path the server's user can traverse, unlike some
/// `TMPDIR`s), mode 0755, owned by `user`.
fn private_dir(prefix: &str, user: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir in /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 temp dir");
    chown_r(user, dir.path());
    dir
}

pub fn chown_r(user: &str, path: &Path) {
    let mut chown = Command::new("chown");
    chown.arg("-R").arg(format!("{user}:{user}")).arg(path);
    run(&mut chown, "chown");
}

/// `runuser -u USER -- PROGRAM`: for programs that exit (initdb, pg_ctl, install).
fn as_user(user: &str, program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--"]).arg(program);
    c.current_dir("/").stdin(Stdio::null());
    c
}

fn output(command: &mut Command, what: &str) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// Runs `command` to its exit, failing the test with its output unless it succeeds.
fn run(command: &mut Command, what: &str) {
    let out = output(command, what);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn user_ids(user: &str) -> (u32, u32) {
    let name = std::ffi::CString::new(user).expect("user name without NUL");
    // SAFETY: getpwnam(3) with a valid C string; the fields are copied out at once.
    // Tests run single-threaded up to here or only read the passwd database.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no system user {user} (created by its server package)"
    );
    // SAFETY: non-null result of getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Pids whose parent is `parent`, from `/proc`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Alive means present and not a zombie (a zombie holds no memory or files).
fn is_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// (state, ppid) from `/proc/PID/stat`; the command name may contain spaces, so the
/// fields are read after its closing parenthesis.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}
