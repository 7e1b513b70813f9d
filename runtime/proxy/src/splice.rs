//! The TCP data path: bytes move socket → pipe → socket with `splice(2)`, never through user
//! memory, one pipe per direction. A direction that reaches end of stream shuts down writing
//! on the other socket and the other direction goes on (half-close); an error in either
//! closes both. Each pipe holds at most one chunk, so a stalled peer costs at most that much.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
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

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?)
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
    let (pr, pw) = pipe()?;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let mut total = 0u64;
    loop {
        within_idle(activity, idle, || src.readable()).await?;
        let n = match src.try_io(Interest::READABLE, || {
            Ok(splice(src, None, &pw, None, CHUNK, flags)?)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // The end of this direction: pass the FIN on, keep the other direction open.
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
            return Ok(total);
        }
        activity.touch();
        let mut left = n;
        while left > 0 {
            within_idle(activity, idle, || dst.writable()).await?;
            match dst.try_io(Interest::WRITABLE, || {
                Ok(splice(&pr, None, dst, None, left, flags)?)
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
