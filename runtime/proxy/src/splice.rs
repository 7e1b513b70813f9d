//! The TCP data path: bytes move socket → pipe → socket with `splice(2)`, never through user
//! memory, one pipe per direction. A direction that reaches end of stream shuts down writing
//! on the other socket and the other direction goes on (half-close); an error in either
//! closes both. A pipe holds at most one chunk, so a stalled peer costs at most that much;
//! and a direction holds a pipe only while bytes are moving: idle connections hold none
//! (pipes come from a shared pool), so 10,000 idle connections cost 20,000 descriptors, not
//! 60,000.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice moves, and so the most a direction holds in flight.
const CHUNK: usize = 64 * 1024;

/// When either direction last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Moves bytes both ways between `a` and `b` until both directions end, one fails, or
/// neither moved a byte for `idle`. Returns the bytes moved a → b and b → a.
pub(crate) async fn bridge(a: &TcpStream, b: &TcpStream, idle: Duration) -> io::Result<(u64, u64)> {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let ab = one_way(a, b, &activity, idle);
    let ba = one_way(b, a, &activity, idle);
    tokio::pin!(ab, ba);
    tokio::select! {
        r = &mut ab => {
            let sent = r?;
            Ok((sent, ba.await?))
        }
        r = &mut ba => {
            let received = r?;
            Ok((ab.await?, received))
        }
    }
}

/// A pipe: its read end and its write end.
type Pipe = (OwnedFd, OwnedFd);

/// Empty pipes kept for reuse, at most [`POOL_MAX`].
static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 1024;

/// An empty pipe, from the pool or new.
fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop() {
        return Ok(p);
    }
    Ok(nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?)
}

/// Gives back a pipe that is empty again.
fn put_pipe(p: Pipe) {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOL_MAX {
        pool.push(p);
    }
}

/// Waits until `ready` resolves, failing once no byte moved either way for `idle`.
async fn within_idle<F: Future<Output = io::Result<()>>>(
    activity: &Activity,
    idle: Duration,
    ready: impl Fn() -> F,
) -> io::Result<()> {
    loop {
        let left = idle.saturating_sub(activity.idle_for());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
        }
        if let Ok(r) = tokio::time::timeout(left, ready()).await {
            return r;
        }
    }
}

async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    idle: Duration,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        within_idle(activity, idle, || src.readable()).await?;
        let pipe = take_pipe()?;
        let moved = move_ready(src, dst, &pipe, activity, idle).await;
        // Only an empty pipe goes back: after an error it may hold bytes.
        if moved.is_ok() {
            put_pipe(pipe);
        }
        match moved? {
            Some(n) => total += n,
            None => {
                // The end of this direction: pass the FIN on, keep the other direction open.
                let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                return Ok(total);
            }
        }
    }
}

/// Moves what `src` has ready through `pipe` to `dst`: the bytes moved, or `None` at the end
/// of the stream.
async fn move_ready(
    src: &TcpStream,
    dst: &TcpStream,
    (pr, pw): &Pipe,
    activity: &Activity,
    idle: Duration,
) -> io::Result<Option<u64>> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let mut total = 0u64;
    loop {
        let n = match src.try_io(Interest::READABLE, || {
            Ok(splice(src, None, pw, None, CHUNK, flags)?)
        }) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(total)),
            Err(e) => return Err(e),
        };
        activity.touch();
        let mut left = n;
        while left > 0 {
            within_idle(activity, idle, || dst.writable()).await?;
            match dst.try_io(Interest::WRITABLE, || {
                Ok(splice(pr, None, dst, None, left, flags)?)
            }) {
                Ok(m) => {
                    left -= m;
                    total += m as u64;
                    activity.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}
