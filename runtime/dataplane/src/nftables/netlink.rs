//! A transaction as one nfnetlink batch, and the socket that sends it.
//!
//! The batch is built from [`Op`]s directly and never reads the ruleset back, which is what
//! makes a delta cost what it changes rather than what the table holds (the `nft` tool
//! re-reads the whole table for every transaction).

use std::io;

use super::expr::{self, addr_bytes};
use super::ops::{Elem, Family, Op, Set, SetKind, TABLE, Verdict, proto_number};
use super::wire::{
    self, F_ACK, F_APPEND, F_CREATE, F_DUMP, F_REQUEST, SUBSYS_NFTABLES, Writer, msg,
};

/// nft's datatype numbers, for `nft list` to print wasp's sets.
mod datatype {
    pub const INTEGER: u32 = 4;
    pub const IPV4: u32 = 7;
    pub const IPV6: u32 = 8;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    /// A concatenation's type: each field's type shifted in, first field highest.
    pub fn concat(types: &[u32]) -> u32 {
        types.iter().fold(0, |acc, t| (acc << 6) | t)
    }
}

/// `NFT_MSG_GETCHAIN`.
const GETCHAIN: u16 = 4;
/// `NFT_MSG_GETSET`.
const GETSET: u16 = 10;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const DATA_VERDICT: u32 = 0xffff_ff00;

/// A batch ready to send: its bytes and, per sequence number, what the message does.
#[derive(Debug, Default)]
pub struct Batch {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The first sequence number of the operations.
    pub first_seq: u32,
    /// The sequence number of the last operation (the one acknowledged).
    pub last_seq: u32,
    /// The index into the transaction of each message, by `seq - first_seq`.
    pub op_of: Vec<usize>,
}

fn nfproto(f: Family) -> u8 {
    match f {
        Family::V4 => 2,
        Family::V6 => 10,
    }
}

/// Encodes a transaction as `BATCH_BEGIN`, one message per operation (element lists split to
/// stay well under netlink's message size), `BATCH_END`. Only the last operation asks for an
/// acknowledgement; errors are always reported.
pub fn encode(tx: &[(Family, Op)], seq: u32) -> Batch {
    let mut w = Writer::default();
    let mut b = Batch {
        first_seq: seq + 1,
        ..Batch::default()
    };
    w.begin(wire::BATCH_BEGIN, F_REQUEST, seq, 0, SUBSYS_NFTABLES);
    w.end();
    let mut s = seq;
    let mut set_id = 0u32;
    let mut last_start = 0;
    for (i, (f, op)) in tx.iter().enumerate() {
        let chunks: Vec<&[Elem]> = match op {
            Op::AddElements { elems, .. } | Op::DeleteElements { elems, .. } => {
                elems.chunks(ELEMS_PER_MESSAGE).collect()
            }
            _ => vec![&[]],
        };
        for chunk in chunks {
            s += 1;
            last_start = w.buf.len();
            b.op_of.push(i);
            set_id += 1;
            message(&mut w, *f, op, chunk, s, set_id);
        }
    }
    b.last_seq = s;
    if s > seq {
        // Ask for an acknowledgement of the last operation: its arrival ends the batch.
        let flags = u16::from_ne_bytes([w.buf[last_start + 6], w.buf[last_start + 7]]) | F_ACK;
        w.buf[last_start + 6..last_start + 8].copy_from_slice(&flags.to_ne_bytes());
    }
    w.begin(wire::BATCH_END, F_REQUEST, s + 1, 0, SUBSYS_NFTABLES);
    w.end();
    b.bytes = w.buf;
    b
}

/// Elements per `NEWSETELEM` message: about 40 bytes each keeps a message near 40 KiB.
const ELEMS_PER_MESSAGE: usize = 1000;

fn message(w: &mut Writer, f: Family, op: &Op, elems: &[Elem], seq: u32, set_id: u32) {
    let fam = nfproto(f);
    let begin = |w: &mut Writer, m: u16, flags: u16| {
        w.begin(SUBSYS_NFTABLES << 8 | m, F_REQUEST | flags, seq, fam, 0);
    };
    match op {
        Op::AddTable => {
            begin(w, msg::NEWTABLE, F_CREATE);
            w.str(1, TABLE);
            w.u32(2, 0);
        }
        Op::DeleteTable => {
            begin(w, msg::DELTABLE, 0);
            w.str(1, TABLE);
        }
        Op::AddChain(c) => {
            begin(w, msg::NEWCHAIN, F_CREATE);
            w.str(1, TABLE);
            w.str(3, &c.name);
            if let Some(h) = c.hook {
                w.nest(4);
                w.u32(1, hook_number(h.hook));
                w.u32(2, h.priority as u32);
                w.end();
                w.u32(5, 1);
                w.str(7, h.kind);
            }
        }
        Op::FlushRules => {
            // DELRULE naming only the table empties every chain in it.
            begin(w, msg::DELRULE, 0);
            w.str(1, TABLE);
        }
        Op::FlushChain(c) => {
            begin(w, msg::DELRULE, 0);
            w.str(1, TABLE);
            w.str(2, c);
        }
        Op::DeleteChain(c) => {
            begin(w, msg::DELCHAIN, 0);
            w.str(1, TABLE);
            w.str(3, c);
        }
        Op::AddRule { chain, rule } => {
            begin(w, msg::NEWRULE, F_CREATE | F_APPEND);
            w.str(1, TABLE);
            w.str(2, chain);
            w.nest(4);
            expr::encode(w, f, rule);
            w.end();
        }
        Op::AddSet(s) => {
            begin(w, msg::NEWSET, F_CREATE);
            set_attrs(w, f, s, set_id);
        }
        Op::FlushSet(s) => {
            begin(w, msg::DELSETELEM, 0);
            w.str(1, TABLE);
            w.str(2, &s.name);
        }
        Op::DeleteSet(s) => {
            begin(w, msg::DELSET, 0);
            w.str(1, TABLE);
            w.str(2, &s.name);
        }
        Op::AddElements { set, .. } | Op::DeleteElements { set, .. } => {
            let (m, values) = match op {
                Op::AddElements { .. } => (msg::NEWSETELEM, true),
                _ => (msg::DELSETELEM, false),
            };
            begin(w, m, if values { F_CREATE } else { 0 });
            w.str(1, TABLE);
            w.str(2, &set.name);
            w.nest(3);
            for e in elems {
                elem(w, e, values);
            }
            w.end();
        }
    }
    w.end();
}

fn hook_number(hook: &str) -> u32 {
    match hook {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        _ => 4,
    }
}

fn set_attrs(w: &mut Writer, f: Family, s: &Set, id: u32) {
    let (addr_type, a) = match f {
        Family::V4 => (datatype::IPV4, 4),
        Family::V6 => (datatype::IPV6, 16),
    };
    w.str(1, TABLE);
    w.str(2, &s.name);
    let (flags, key_type, key_len, data) = match s.kind {
        SetKind::Dispatch => (
            SET_MAP,
            datatype::concat(&[addr_type, datatype::INET_PROTO, datatype::INET_SERVICE]),
            a + 8,
            Some((DATA_VERDICT, 0)),
        ),
        SetKind::Hairpin => (0, datatype::concat(&[addr_type, addr_type]), 2 * a, None),
        SetKind::Endpoints(_) => (
            SET_MAP,
            datatype::concat(&[addr_type, datatype::INET_SERVICE, datatype::INTEGER]),
            a + 8,
            Some((
                datatype::concat(&[addr_type, datatype::INET_SERVICE]),
                a + 4,
            )),
        ),
        SetKind::Affinity { .. } => (SET_TIMEOUT | SET_EVAL, addr_type, a, None),
    };
    w.u32(3, flags);
    w.u32(4, key_type);
    w.u32(5, key_len);
    if let Some((ty, len)) = data {
        w.u32(6, ty);
        w.u32(7, len);
    }
    w.u32(10, id);
    if let SetKind::Affinity { timeout } = s.kind {
        w.u64(11, u64::from(timeout) * 1000);
    }
    if let SetKind::Endpoints(p) = s.kind {
        w.bytes(13, &typeof_userdata(f, p));
    }
}

/// The userdata nft writes for `typeof ip daddr . tcp dport . numgen random mod 2 :
/// ip daddr . tcp dport`, so that `nft list` prints the endpoints maps as it prints its own
/// (without it, nft cannot size the slot and aborts). The format is libnftnl's `udata` TLVs;
/// the numbers are nft's expression kinds (concat 13, payload 7, numgen 23) and protocol
/// header templates (ip 12 with daddr 12, ip6 13 with daddr 9; tcp 8, udp 6, sctp 10, dport 2).
fn typeof_userdata(f: Family, p: wasp_model::Protocol) -> Vec<u8> {
    fn tlv(t: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![t, v.len() as u8];
        out.extend_from_slice(v);
        out
    }
    fn num(t: u8, x: u32) -> Vec<u8> {
        tlv(t, &x.to_ne_bytes())
    }
    let payload = |t, desc, field| {
        tlv(
            t,
            &[num(0, 7), tlv(1, &[num(0, desc), num(1, field)].concat())].concat(),
        )
    };
    let (ip, daddr) = match f {
        Family::V4 => (12, 12),
        Family::V6 => (13, 9),
    };
    let th = match p {
        wasp_model::Protocol::Tcp => 8,
        wasp_model::Protocol::Udp => 6,
        wasp_model::Protocol::Sctp => 10,
    };
    let (addr, port) = (payload(0, ip, daddr), payload(1, th, 2));
    let numgen = tlv(
        2,
        &[
            num(0, 23),
            tlv(1, &[num(0, 1), num(1, 2), num(2, 0)].concat()),
        ]
        .concat(),
    );
    let concat = |parts: &[&[u8]]| [num(0, 13), tlv(1, &parts.concat())].concat();
    [
        num(0, 0),
        num(1, 0),
        tlv(3, &concat(&[&addr, &port, &numgen])),
        tlv(4, &concat(&[&addr, &port])),
    ]
    .concat()
}

/// Pads a field to its 32-bit register width.
fn padded(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn elem(w: &mut Writer, e: &Elem, values: bool) {
    let one = |w: &mut Writer, key: &[u8], data: Option<&dyn Fn(&mut Writer)>| {
        w.nest(1);
        w.nest(1);
        w.bytes(1, key);
        w.end();
        if let Some(d) = data {
            w.nest(2);
            d(w);
            w.end();
        }
        w.end();
    };
    match e {
        Elem::Dispatch {
            addr,
            proto,
            port,
            verdict,
        } => {
            let mut key = Vec::new();
            padded(&mut key, &addr_bytes(addr));
            padded(&mut key, &[proto_number(*proto)]);
            padded(&mut key, &port.to_be_bytes());
            let data = |w: &mut Writer| {
                w.nest(2);
                match verdict {
                    Verdict::Goto(c) => {
                        w.u32(1, expr::verdict::GOTO);
                        w.str(2, c);
                    }
                    Verdict::Drop => w.u32(1, expr::verdict::DROP),
                }
                w.end();
            };
            one(w, &key, values.then_some(&data as &dyn Fn(&mut Writer)));
        }
        Elem::Hairpin(ip) => {
            let mut key = addr_bytes(ip);
            key.extend(addr_bytes(ip));
            one(w, &key, None);
        }
        Elem::Slot {
            vip,
            port,
            slot,
            addr,
            target,
        } => {
            let mut key = addr_bytes(vip);
            padded(&mut key, &port.to_be_bytes());
            // The slot is what numgen and jhash write: a host-order u32.
            key.extend_from_slice(&slot.to_ne_bytes());
            let mut t = addr_bytes(addr);
            padded(&mut t, &target.to_be_bytes());
            let data = |w: &mut Writer| w.bytes(1, &t);
            one(w, &key, values.then_some(&data as &dyn Fn(&mut Writer)));
        }
    }
}

/// A netlink socket on `NETLINK_NETFILTER`, in the calling thread's network namespace.
#[derive(Debug)]
pub struct Socket {
    fd: std::os::fd::OwnedFd,
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

// The socket calls are this crate's only FFI; each `unsafe` block says why it is sound.
#[allow(unsafe_code)]
impl Socket {
    /// Opens the socket.
    ///
    /// # Errors
    /// Fails when netlink is unavailable (for example without `CAP_NET_ADMIN`, at send).
    pub fn open() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let s = Self {
            fd,
            seq: (std::process::id() & 0xffff) << 12,
        };
        s.setopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        s.setopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        s.setopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
        let tv = libc::timeval {
            tv_sec: 60,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of the right size for SO_RCVTIMEO.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s.fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        Ok(s)
    }

    fn setopt(&self, level: i32, name: i32, value: i32) {
        // SAFETY: an int option on our own socket; failure only loses an optimisation.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                level,
                name,
                (&raw const value).cast(),
                size_of::<i32>() as u32,
            );
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: the buffer and address outlive the call.
        let n = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(&buf[..n as usize])
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
        let batch = encode(tx, self.seq);
        self.seq = batch.last_seq.wrapping_add(2);
        self.setopt(
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (batch.bytes.len() + 4096).min(i32::MAX as usize) as i32,
        );
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
