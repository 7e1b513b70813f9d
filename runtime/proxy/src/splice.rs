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
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::Activity;

/// The most one splice moves, and so the most a direction holds in flight.
const CHUNK: usize = 1 << 20;

/// Moves bytes both ways between `a` and `b` until both directions end, one fails, or
/// neither moved a byte for `idle`. Returns the bytes moved a → b and b → a.
pub(crate) async fn bridge(a: &TcpStream, b: &TcpStream, idle: Duration) -> io::Result<(u64, u64)> {
    let activity = Activity::new();
    let ab = one_way(a, b, &activity);
    let ba = one_way(b, a, &activity);
    let both = async {
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
    };
    // One timer per connection, not one per wait.
    tokio::select! {
        r = both => r,
        e = watchdog(&activity, idle) => Err(e),
    }
}

/// Resolves once neither direction moved a byte for `idle`.
async fn watchdog(activity: &Activity, idle: Duration) -> io::Error {
    loop {
        let left = idle.saturating_sub(activity.idle_for());
        if left.is_zero() {
            return io::Error::new(io::ErrorKind::TimedOut, "idle timeout");
        }
        tokio::time::sleep(left).await;
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
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // A bigger pipe moves a bulk stream in fewer calls; where the kernel refuses (above
    // fs.pipe-max-size for this user), the default 64 KiB works too.
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok((r, w))
}

/// Gives back a pipe that is empty again.
fn put_pipe(p: Pipe) {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < POOL_MAX {
        pool.push(p);
    }
}

async fn one_way(src: &TcpStream, dst: &TcpStream, activity: &Activity) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let pipe = take_pipe()?;
        let moved = move_ready(src, dst, &pipe, activity).await;
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
            dst.writable().await?;
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
