//! The control socket server: binds `/run/regionwall/<iface>.sock` (0600,
//! or 0660 for a read-only group), checks every client's credentials
//! (SO_PEERCRED) and answers `events`, `stats`, `detach`, `reload` and the
//! candidate's `stage`, `diff`, `promote` and `discard`.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
    sync::{broadcast, mpsc, oneshot},
};

use crate::{
    control::{Ack, Filter, Lagged, Request, Stats},
    events::Record,
};

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "another controller (pid {pid}) answers on {} (use another --socket, or stop it)",
        path.display()
    )]
    InUse { path: PathBuf, pid: i32 },
    #[error(
        "{} is bound by a process of uid {uid} (pid {pid}), not by a regionwall controller running as root: remove it or choose another --socket",
        path.display()
    )]
    Foreign { path: PathBuf, uid: u32, pid: i32 },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Who may do what through the socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access {
    /// Members of this group (primary or supplementary) may use the
    /// read-only commands (`events`, `stats`); only root may `detach`.
    pub read_group: Option<u32>,
}

/// Binds the control socket: the directory 0700 (0750 with a read group),
/// the socket 0600 (0660) from the moment it exists. A path some other
/// controller answers on is an error; a stale one is replaced.
pub fn bind(path: &Path, access: Access) -> Result<UnixListener, SocketError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let (dir_mode, sock_mode) = if access.read_group.is_some() {
        (0o750, 0o660)
    } else {
        (0o700, 0o600)
    };
    if let Some(dir) = path.parent() {
        // Only a directory this controller creates is given its mode and
        // group: an existing one (/run/regionwall, /tmp, a shared 1777
        // directory) is never changed.
        if !dir.exists() {
            // Every directory made here gets the mode and group, so a group
            // member can reach the socket through all of them.
            let made: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(dir_mode)
                .create(dir)
                .map_err(io_err("creating", dir))?;
            if let Some(gid) = access.read_group {
                for d in made {
                    std::os::unix::fs::chown(d, None, Some(gid)).map_err(io_err("chown", d))?;
                    std::fs::set_permissions(d, std::fs::Permissions::from_mode(dir_mode))
                        .map_err(io_err("chmod", d))?;
                }
            }
        } else if access.read_group.is_some() {
            use std::os::unix::fs::MetadataExt as _;
            let meta = std::fs::metadata(dir).map_err(io_err("reading", dir))?;
            let group_enters = meta.mode() & 0o010 != 0 && access.read_group == Some(meta.gid())
                || meta.mode() & 0o001 != 0;
            if !group_enters {
                log::warn!(
                    "{} exists and members of --socket-group cannot enter it; they will not reach the socket (it was left as it is)",
                    dir.display()
                );
            }
        }
    }
    if path.exists() {
        if let Ok(peer) = std::os::unix::net::UnixStream::connect(path) {
            let cred = peer_cred_std(&peer).map_err(io_err("reading the peer of", path))?;
            return Err(
                if cred.uid == 0 || cred.uid == rustix::process::geteuid().as_raw() {
                    SocketError::InUse {
                        path: path.to_path_buf(),
                        pid: cred.pid,
                    }
                } else {
                    SocketError::Foreign {
                        path: path.to_path_buf(),
                        uid: cred.uid,
                        pid: cred.pid,
                    }
                },
            );
        }
        std::fs::remove_file(path).map_err(io_err("removing stale", path))?;
    }
    // Created with the final mode from the start: no window where others
    // may connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777 & !sock_mode));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(io_err("binding", path))?;
    if let Some(gid) = access.read_group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("chown", path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(sock_mode))
        .map_err(io_err("chmod", path))?;
    Ok(listener)
}

struct Cred {
    uid: u32,
    gid: u32,
    pid: i32,
}

fn peer_cred_std(s: &std::os::unix::net::UnixStream) -> io::Result<Cred> {
    let c = rustix::net::sockopt::socket_peercred(s)?;
    Ok(Cred {
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
        pid: c.pid.as_raw_nonzero().get(),
    })
}

/// Whether the process `pid` has `gid` among its supplementary groups.
fn in_group(pid: i32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    All,
    ReadOnly,
    None,
}

fn grant(cred: &Cred, access: Access) -> Grant {
    if cred.uid == 0 || cred.uid == rustix::process::geteuid().as_raw() {
        return Grant::All;
    }
    match access.read_group {
        Some(g) if cred.gid == g || in_group(cred.pid, g) => Grant::ReadOnly,
        _ => Grant::None,
    }
}

/// What the controller's loop shares with the socket's clients.
pub struct Shared {
    pub iface: String,
    pub access: Access,
    pub feed: broadcast::Sender<Arc<Record>>,
    /// The names an events filter may use.
    pub known: Arc<std::sync::RwLock<super::Known>>,
    pub detach: mpsc::Sender<oneshot::Sender<Ack>>,
    pub stats: mpsc::Sender<oneshot::Sender<Stats>>,
    /// `reload` (from `regionwall update`): answered once the reload it
    /// started has been applied or rejected.
    pub reload: mpsc::Sender<oneshot::Sender<Ack>>,
    /// The names devices looked up (when DNS answers are watched).
    pub hosts: Option<super::hostnames::HostNames>,
    /// The staged candidate: stage, diff, promote, discard.
    pub shadow: super::shadow::Client,
    /// The candidate's events (`events` with `candidate`).
    pub candidate_feed: broadcast::Sender<Arc<super::shadow::CandidateRecord>>,
}

/// Serves clients until the listener fails; each client on its own task.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = serve_client(stream, &shared).await {
                        log::debug!("control client: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("control socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_client(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let cred = Cred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().unwrap_or(0),
    };
    let grant = grant(&cred, shared.access);
    let (read, mut write) = stream.into_split();
    // The request is read before any answer, refusals included: a client
    // whose request is still in flight would otherwise see EPIPE instead
    // of the reason. One short line: bounded, and not waited on forever.
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 64 * 1024));
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        reader.read_line(&mut line),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within 5 s"))??;
    if grant == Grant::None {
        log::warn!(
            "control socket: refused uid {} (pid {}): not root{}",
            cred.uid,
            cred.pid,
            if shared.access.read_group.is_some() {
                " nor in the read-only group"
            } else {
                ""
            }
        );
        return refuse(
            &mut write,
            "permission denied: only root may use this socket",
        )
        .await;
    }
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return refuse(&mut write, &format!("bad request: {e}")).await,
    };
    match request {
        Request::Events(filter) => stream_events(&mut write, shared, &filter).await,
        Request::Stats => answer(&mut write, &shared.stats).await,
        Request::Hosts { addr } => {
            let answer = crate::control::HostsAnswer {
                watching: shared.hosts.is_some(),
                lookups: shared
                    .hosts
                    .as_ref()
                    .map(|h| h.who_resolved(addr))
                    .unwrap_or_default(),
            };
            write.write_all(json_line(&answer).as_bytes()).await
        }
        Request::Diff => match shared.shadow.status().await {
            Some(status) => write.write_all(json_line(&status).as_bytes()).await,
            None => Ok(()),
        },
        Request::Stage { .. } | Request::Promote { .. } | Request::Discard
            if grant != Grant::All =>
        {
            refuse(
                &mut write,
                "permission denied: changing the candidate needs root",
            )
            .await
        }
        Request::Stage { path } => {
            let ack = shared.shadow.stage(path).await;
            write.write_all(json_line(&ack).as_bytes()).await
        }
        Request::Promote { force } => {
            let ack = shared.shadow.promote(force).await;
            write.write_all(json_line(&ack).as_bytes()).await
        }
        Request::Discard => {
            let ack = shared.shadow.discard().await;
            write.write_all(json_line(&ack).as_bytes()).await
        }
        Request::Detach if grant == Grant::All => answer(&mut write, &shared.detach).await,
        Request::Reload if grant == Grant::All => answer(&mut write, &shared.reload).await,
        Request::Reload => refuse(&mut write, "permission denied: reload needs root").await,
        Request::Detach => {
            log::warn!(
                "control socket: refused detach from uid {} (pid {}): read-only access",
                cred.uid,
                cred.pid
            );
            refuse(&mut write, "permission denied: detach needs root").await
        }
    }
}

async fn refuse(write: &mut OwnedWriteHalf, message: &str) -> io::Result<()> {
    let ack = Ack {
        ok: false,
        message: message.to_string(),
    };
    write.write_all(json_line(&ack).as_bytes()).await
}

/// Asks the controller's loop through `loop_tx` and writes its answer.
async fn answer<T: serde::Serialize>(
    write: &mut OwnedWriteHalf,
    loop_tx: &mpsc::Sender<oneshot::Sender<T>>,
) -> io::Result<()> {
    let (tx, rx) = oneshot::channel();
    if loop_tx.send(tx).await.is_err() {
        return Ok(());
    }
    if let Ok(value) = rx.await {
        write.write_all(json_line(&value).as_bytes()).await?;
    }
    Ok(())
}

async fn stream_events(
    write: &mut OwnedWriteHalf,
    shared: &Shared,
    filter: &Filter,
) -> io::Result<()> {
    // A filter naming what the policy lacks would wait forever.
    let unknown = shared.known.read().ok().and_then(|k| k.unknown(filter));
    if let Some(why) = unknown {
        return refuse(write, &why).await;
    }
    if filter.candidate {
        return stream_candidate(write, shared, filter).await;
    }
    let mut feed = shared.feed.subscribe();
    log::info!("events client attached ({})", shared.iface);
    loop {
        match feed.recv().await {
            Ok(record) => {
                if filter.matches(&record) {
                    write
                        .write_all(json_line(record.as_ref()).as_bytes())
                        .await?;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                write
                    .write_all(json_line(&Lagged { lagged: n }).as_bytes())
                    .await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// The staged candidate's events, filtered like live ones.
async fn stream_candidate(
    write: &mut OwnedWriteHalf,
    shared: &Shared,
    filter: &Filter,
) -> io::Result<()> {
    let mut feed = shared.candidate_feed.subscribe();
    loop {
        match feed.recv().await {
            Ok(record) => {
                if filter.matches(&record.record) {
                    write
                        .write_all(json_line(record.as_ref()).as_bytes())
                        .await?;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                write
                    .write_all(json_line(&Lagged { lagged: n }).as_bytes())
                    .await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Removes the control socket however the controller ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
