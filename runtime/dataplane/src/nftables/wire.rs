//! nfnetlink's wire format: message headers, attributes, and a reader for tests and replies.
//!
//! Numbers are those of `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and
//! `linux/netfilter/nf_tables.h`.

/// `NLM_F_REQUEST`.
pub const F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: one of a dump's answers.
pub const F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`.
pub const F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const F_DUMP: u16 = 0x300;
/// `NLM_F_CREATE`.
pub const F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`.
pub const F_APPEND: u16 = 0x800;
/// `NLMSG_ERROR`.
pub const MSG_ERROR: u16 = 0x2;
/// `NLMSG_DONE`.
pub const MSG_DONE: u16 = 0x3;
/// `NFNL_MSG_BATCH_BEGIN`.
pub const BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
pub const BATCH_END: u16 = 0x11;
/// `NFNL_SUBSYS_NFTABLES`.
pub const SUBSYS_NFTABLES: u16 = 10;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[allow(missing_docs)]
pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const DELSETELEM: u16 = 14;
}

/// A netlink message under construction, and the batch it belongs to.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes so far.
    pub buf: Vec<u8>,
    /// The open message and nests: where each starts, and whether it is a nest.
    open: Vec<(usize, bool)>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

impl Writer {
    /// Starts a message: `nlmsghdr` + `nfgenmsg`.
    pub fn begin(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        let id = res_id.to_be_bytes();
        self.begin_with(kind, flags, seq, &[family, 0, id[0], id[1]]);
    }

    /// Starts a message: `nlmsghdr` + a family's own fixed header (`genlmsghdr`,
    /// `ifinfomsg`, ...), given as bytes.
    pub fn begin_with(&mut self, kind: u16, flags: u16, seq: u32, header: &[u8]) {
        self.open.push((self.buf.len(), false));
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(header);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// Ends the message (or nest) begun last, writing its length.
    pub fn end(&mut self) {
        let (start, nest) = self.open.pop().expect("an open message");
        let len = self.buf.len() - start;
        if nest {
            self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        } else {
            self.buf[start..start + 4].copy_from_slice(&(len as u32).to_ne_bytes());
        }
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// An attribute with raw bytes.
    pub fn bytes(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v);
    }

    /// A big-endian u32 attribute.
    pub fn u32(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// A native-endian u16 attribute (generic netlink's integers).
    pub fn ne16(&mut self, ty: u16, v: u16) {
        self.bytes(ty, &v.to_ne_bytes());
    }

    /// A native-endian u32 attribute.
    pub fn ne32(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_ne_bytes());
    }

    /// A big-endian u16 attribute (ports).
    pub fn be16(&mut self, ty: u16, v: u16) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// A big-endian u64 attribute.
    pub fn u64(&mut self, ty: u16, v: u64) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// Opens a nested attribute; close it with [`Writer::end`].
    pub fn nest(&mut self, ty: u16) {
        self.open.push((self.buf.len(), true));
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }
}

/// One attribute read back: its type (without flags) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The type.
    pub ty: u16,
    /// The payload.
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The payload as nested attributes.
    pub fn nested(&self) -> Vec<Attr<'a>> {
        attrs(self.data)
    }

    /// The payload as a big-endian u32.
    pub fn be32(&self) -> u32 {
        self.data
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    }

    /// The payload as a native-endian u32.
    pub fn ne32(&self) -> u32 {
        self.data
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    }

    /// The payload as a native-endian u16.
    pub fn ne16(&self) -> u16 {
        self.data
            .get(..2)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u16::from_ne_bytes)
    }

    /// The payload as a big-endian u16.
    pub fn be16(&self) -> u16 {
        self.data
            .get(..2)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u16::from_be_bytes)
    }

    /// The payload as a string, without its NUL.
    pub fn string(&self) -> String {
        String::from_utf8_lossy(self.data.split(|b| *b == 0).next().unwrap_or_default())
            .into_owned()
    }
}

/// Splits a buffer into attributes.
pub fn attrs(mut b: &[u8]) -> Vec<Attr<'_>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
        if len < 4 || len > b.len() {
            break;
        }
        out.push(Attr {
            ty,
            data: &b[4..len],
        });
        b = &b[align(len).min(b.len())..];
    }
    out
}

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The full type (subsystem << 8 | message).
    pub kind: u16,
    /// The flags.
    pub flags: u16,
    /// The sequence number.
    pub seq: u32,
    /// The payload after `nlmsghdr`.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The `nfgenmsg` family.
    pub fn family(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }

    /// The attributes after `nfgenmsg`.
    pub fn attrs(&self) -> Vec<Attr<'a>> {
        attrs(self.payload.get(4..).unwrap_or_default())
    }
}

/// The bytes message `m` takes in its buffer, padding included.
pub fn aligned_len(m: &Message<'_>) -> usize {
    align(16 + m.payload.len())
}

/// Splits a buffer into netlink messages.
pub fn messages(mut b: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        out.push(Message {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[16..len],
        });
        b = &b[align(len).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_nested_attributes_read_back_as_written() {
        let mut w = Writer::default();
        w.begin(SUBSYS_NFTABLES << 8 | msg::NEWCHAIN, F_REQUEST, 7, 2, 0);
        w.str(1, "wasp");
        w.nest(4);
        w.u32(1, 3);
        w.u32(2, (-100i32) as u32);
        w.end();
        w.str(7, "nat");
        w.end();
        w.begin(BATCH_END, F_REQUEST, 8, 0, SUBSYS_NFTABLES);
        w.end();

        let msgs = messages(&w.buf);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].kind, SUBSYS_NFTABLES << 8 | msg::NEWCHAIN);
        assert_eq!((msgs[0].seq, msgs[0].family()), (7, 2));
        let a = msgs[0].attrs();
        assert_eq!(a[0].string(), "wasp");
        let hook = a[1].nested();
        assert_eq!((hook[0].be32(), hook[1].be32() as i32), (3, -100));
        assert_eq!(a[2].string(), "nat");
        assert_eq!(msgs[1].kind, BATCH_END);
        // Lengths are 4-aligned and the header's length covers the whole message.
        assert_eq!(w.buf.len() % 4, 0);
        let first = u32::from_ne_bytes(w.buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(first + 20, w.buf.len());
    }
}
