//! The netlink socket: the only I/O of the nftables mode. It sends an encoded batch and
//! waits for the kernel's verdict on all of it, and lists the names of wasp's chains and sets.
//! The calls go through `nix`'s safe wrappers; the two netlink options nix lacks are set with
//! `setsockopt(2)` directly.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};
use nix::sys::time::TimeVal;

use super::encode::{self, GETCHAIN, GETSET, nfproto};
use super::ops::{Family, Op, TABLE};
use super::wire::{self, F_DUMP, F_REQUEST, SUBSYS_NFTABLES, Writer};

/// Sends `bytes` to the kernel (netlink port 0) on `fd`, in one datagram.
pub(crate) fn send_to_kernel(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    socket::sendto(
        fd.as_raw_fd(),
        bytes,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    Ok(())
}

/// A netlink socket on `NETLINK_NETFILTER`, in the calling thread's network namespace.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// A batch the kernel rejected.
#[derive(Debug)]
pub struct Rejected {
    /// The index of the failing operation in the transaction; `None` when the batch as a
    /// whole was refused.
    pub op: Option<usize>,
    /// The kernel's error.
    pub error: io::Error,
}

impl Socket {
    /// Opens the socket.
    ///
    /// # Errors
    /// Fails when netlink is unavailable (for example without `CAP_NET_ADMIN`, at send).
    pub fn open() -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        let s = Self {
            fd,
            seq: (std::process::id() & 0xffff) << 12,
        };
        // Extended acks name the failing attribute; capped acks do not echo the request back.
        // Failure of either only loses detail.
        s.netlink_flag(libc::NETLINK_EXT_ACK);
        s.netlink_flag(libc::NETLINK_CAP_ACK);
        // A full sync's answers can be many: a large receive buffer, where root may have it.
        let _ = socket::setsockopt(&s.fd, sockopt::RcvBufForce, &(4 << 20));
        let _ = socket::setsockopt(&s.fd, sockopt::ReceiveTimeout, &TimeVal::new(60, 0));
        Ok(s)
    }

    #[allow(unsafe_code)]
    fn netlink_flag(&self, name: i32) {
        let one: i32 = 1;
        // SAFETY: an int option on a socket this struct owns, passed by pointer with its size.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                name,
                (&raw const one).cast(),
                size_of::<i32>() as u32,
            );
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        send_to_kernel(&self.fd, bytes)
    }

    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        let n = socket::recv(self.fd.as_fd().as_raw_fd(), buf, MsgFlags::empty())?;
        Ok(&buf[..n])
    }

    /// Sends a transaction as one batch and waits for the kernel's verdict on all of it.
    ///
    /// # Errors
    /// `Err(Ok(rejected))` when the kernel rejected the batch (nothing was applied);
    /// `Err(Err(io))` when the socket failed.
    pub fn apply(&mut self, tx: &[(Family, Op)]) -> Result<usize, Result<Rejected, io::Error>> {
        if tx.is_empty() {
            return Ok(0);
        }
        if self.seq > 1 << 31 {
            // Far from wrapping, whatever the batch size: sequence numbers only need to differ
            // from the last few batches'.
            self.seq = 1;
        }
        let batch = encode::encode(tx, self.seq);
        self.apply_batch(&batch)
    }

    /// The next batch's first sequence number (for a batch encoded elsewhere).
    pub fn next_seq(&mut self) -> u32 {
        if self.seq > 1 << 31 {
            self.seq = 1;
        }
        self.seq
    }

    /// Sends an encoded batch and waits for the kernel's verdict on all of it, as
    /// [`Socket::apply`] does.
    ///
    /// # Errors
    /// As [`Socket::apply`].
    pub fn apply_batch(
        &mut self,
        batch: &encode::Batch,
    ) -> Result<usize, Result<Rejected, io::Error>> {
        self.seq = batch.last_seq.wrapping_add(2);
        // The batch goes in one sendto: the send buffer must hold it.
        let want = (batch.bytes.len() + 4096).min(i32::MAX as usize);
        let _ = socket::setsockopt(&self.fd, sockopt::SndBufForce, &want);
        self.send(&batch.bytes).map_err(Err)?;
        let mut first: Option<Rejected> = None;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            for m in wire::messages(self.recv(&mut buf).map_err(Err)?) {
                // Only answers to this batch count (a stale answer to an earlier one is skipped).
                let (begin, end) = (batch.first_seq - 1, batch.last_seq + 1);
                if m.kind != wire::MSG_ERROR
                    || m.payload.len() < 4
                    || !(begin..=end).contains(&m.seq)
                {
                    continue;
                }
                let code = i32::from_ne_bytes(m.payload[..4].try_into().unwrap_or_default());
                if code != 0 && (m.seq == begin || m.seq == end) {
                    // The batch as a whole was refused (no CAP_NET_ADMIN, no memory): nothing
                    // else will answer.
                    return Err(Ok(Rejected {
                        op: None,
                        error: io::Error::from_raw_os_error(-code),
                    }));
                }
                if code != 0 && first.is_none() {
                    let op = m
                        .seq
                        .checked_sub(batch.first_seq)
                        .and_then(|i| batch.op_of.get(i as usize).copied());
                    first = Some(Rejected {
                        op,
                        error: io::Error::from_raw_os_error(-code),
                    });
                }
                if m.seq == batch.last_seq {
                    return match first {
                        None => Ok(batch.op_of.len()),
                        Some(r) => Err(Ok(r)),
                    };
                }
            }
        }
    }

    /// The names of the chains (or, with `sets`, the sets) in wasp's table of family `f`;
    /// empty when the table does not exist. Reads names only, never rules or elements.
    ///
    /// # Errors
    /// Fails when the socket fails or the kernel refuses the dump.
    pub fn names(&mut self, f: Family, sets: bool) -> io::Result<Vec<String>> {
        let (m, name_attr) = if sets { (GETSET, 2) } else { (GETCHAIN, 3) };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut w = Writer::default();
        w.begin(
            SUBSYS_NFTABLES << 8 | m,
            F_REQUEST | F_DUMP,
            seq,
            nfproto(f),
            0,
        );
        w.str(1, TABLE);
        w.end();
        self.send(&w.buf)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            for msg in wire::messages(self.recv(&mut buf)?) {
                if msg.seq != seq {
                    continue;
                }
                match msg.kind {
                    wire::MSG_DONE => return Ok(out),
                    wire::MSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            msg.payload
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or_default(),
                        );
                        if code == 0 || -code == libc::ENOENT {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => {
                        let attrs = msg.attrs();
                        let in_table = attrs.iter().any(|a| a.ty == 1 && a.string() == TABLE);
                        if let Some(n) = attrs.iter().find(|a| a.ty == name_attr)
                            && in_table
                        {
                            out.push(n.string());
                        }
                    }
                }
            }
        }
    }
}
