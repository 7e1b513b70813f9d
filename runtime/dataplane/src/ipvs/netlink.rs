//! A netlink socket for the ipvs mode, the only I/O besides the helper table: generic
//! netlink (IPVS) and rtnetlink (the dummy device), in the calling thread's namespace.
//!
//! Changes are sent many to a send without acknowledgements; a final barrier's answer
//! follows the kernel's answers to everything before it, so only failures come back.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, sockopt};
use nix::sys::time::TimeVal;

use crate::nftables::wire::{self, Writer};

/// The most bytes one send carries; a batch is split at message boundaries.
const CHUNK: usize = 256 << 10;

/// A netlink socket.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// A message read back, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Its type.
    pub kind: u16,
    /// Its payload after `nlmsghdr`.
    pub payload: Vec<u8>,
}

impl Reply {
    /// The borrowed form, for the decoders.
    pub fn message(&self) -> wire::Message<'_> {
        wire::Message {
            kind: self.kind,
            flags: 0,
            seq: 0,
            payload: &self.payload,
        }
    }
}

fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes)
}

impl Netlink {
    /// Opens a socket of `protocol` (`NetlinkGeneric`, `NetlinkRoute`).
    ///
    /// # Errors
    /// Fails when netlink is unavailable.
    pub fn open(protocol: SockProtocol) -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )?;
        let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20));
        let _ = socket::setsockopt(&fd, sockopt::SndBufForce, &(CHUNK + 4096));
        let _ = socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(60, 0));
        Ok(Self {
            fd,
            seq: std::process::id() << 8,
        })
    }

    /// A fresh sequence number.
    pub fn seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        crate::nftables::socket::send_to_kernel(&self.fd, bytes)
    }

    /// Reads answers until `done` says the one it waits for has come; every message read
    /// goes through `each`.
    fn read(&self, mut each: impl FnMut(&wire::Message<'_>) -> bool) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            for m in wire::messages(&buf[..n]) {
                if each(&m) {
                    return Ok(());
                }
            }
        }
    }

    /// Sends `msgs` (whole messages with sequence numbers from `first`, one per item, as
    /// `encode` wrote them) and then a barrier; returns the failures, by the index of the
    /// message that failed.
    ///
    /// # Errors
    /// Fails when the socket fails; what was sent before stays applied.
    pub fn apply(
        &mut self,
        msgs: &[u8],
        first: u32,
        count: usize,
    ) -> io::Result<Vec<(usize, io::Error)>> {
        let mut rest = msgs;
        while !rest.is_empty() {
            let mut cut = 0;
            for m in wire::messages(rest) {
                let len = wire::aligned_len(&m);
                if cut > 0 && cut + len > CHUNK {
                    break;
                }
                cut += len;
            }
            if cut == 0 {
                cut = rest.len();
            }
            self.send(&rest[..cut])?;
            rest = &rest[cut..];
        }
        let barrier = self.seq();
        let mut w = Writer::default();
        super::genl::barrier(&mut w, barrier);
        self.send(&w.buf)?;
        let mut failed = Vec::new();
        self.read(|m| {
            if m.kind != wire::MSG_ERROR {
                return false;
            }
            if m.seq == barrier {
                return true;
            }
            let code = error_code(m.payload);
            let index = m.seq.wrapping_sub(first) as usize;
            if code != 0 && index < count {
                failed.push((index, io::Error::from_raw_os_error(-code)));
            }
            false
        })?;
        Ok(failed)
    }

    /// Sends one request (a dump, or a request with one answer) and returns its answers.
    /// `ENOENT` reads as no answers.
    ///
    /// # Errors
    /// Fails when the socket fails or the kernel refuses the request.
    pub fn request(&mut self, msg: &[u8], seq: u32) -> io::Result<Vec<Reply>> {
        self.send(msg)?;
        let mut out = Vec::new();
        let mut err = None;
        self.read(|m| {
            if m.seq != seq {
                return false;
            }
            match m.kind {
                wire::MSG_DONE => true,
                wire::MSG_ERROR => {
                    let code = error_code(m.payload);
                    if code != 0 && -code != libc::ENOENT {
                        err = Some(io::Error::from_raw_os_error(-code));
                    }
                    true
                }
                kind => {
                    out.push(Reply {
                        kind,
                        payload: m.payload.to_vec(),
                    });
                    // A request that is not a dump has one answer (and an ack only if asked).
                    m.flags & wire::F_MULTI == 0
                }
            }
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
