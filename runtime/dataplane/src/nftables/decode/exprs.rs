//! A rule's kernel expressions, one by one, as much of each as wasp writes: what
//! [`super::rule`] matches rule shapes against.

use super::*;

/// One kernel expression, as much of it as wasp writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expr {
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    MetaLoad {
        key: u32,
    },
    MetaSet {
        key: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Ct {
        key: u32,
    },
    Lookup {
        set: String,
        dreg: Option<u32>,
    },
    Verdict {
        code: u32,
        chain: Option<String>,
    },
    Immediate {
        data: Vec<u8>,
    },
    Numgen {
        modulus: u32,
        offset: u32,
    },
    Hash {
        modulus: u32,
        seed: u32,
        offset: u32,
    },
    Fib {
        result: u32,
        flags: u32,
    },
    Byteorder,
    Nat,
    Masq,
    Redir,
    Socket {
        key: u32,
    },
    Reject,
    Dynset {
        set: String,
    },
}

fn u(a: &[Attr<'_>], ty: u16) -> Result<u32, String> {
    Ok(attr(a, ty)?.be32())
}

/// An attribute wasp writes only when it is not 0.
fn opt(a: &[Attr<'_>], ty: u16) -> u32 {
    a.iter().find(|x| x.ty == ty).map_or(0, Attr::be32)
}

fn data(a: &[Attr<'_>], ty: u16) -> Result<Vec<u8>, String> {
    Ok(attr(&attr(a, ty)?.nested(), 1)?.data.to_vec())
}

/// One `NFTA_LIST_ELEM` of a rule's expressions.
pub(super) fn expr(e: &[Attr<'_>]) -> Result<Expr, String> {
    let name = attr(e, 1)?.string();
    let d = attr(e, 2)?.nested();
    Ok(match name.as_str() {
        "payload" => Expr::Payload {
            base: u(&d, 2)?,
            offset: u(&d, 3)?,
            len: u(&d, 4)?,
        },
        "meta" if d.iter().any(|a| a.ty == 1) => Expr::MetaLoad { key: u(&d, 2)? },
        "meta" => Expr::MetaSet { key: u(&d, 2)? },
        "cmp" => Expr::Cmp {
            op: u(&d, 2)?,
            data: data(&d, 3)?,
        },
        "bitwise" => Expr::Bitwise {
            mask: data(&d, 4)?,
            xor: data(&d, 5)?,
        },
        "ct" => Expr::Ct { key: u(&d, 2)? },
        "lookup" => Expr::Lookup {
            set: attr(&d, 1)?.string(),
            dreg: d.iter().find(|a| a.ty == 3).map(Attr::be32),
        },
        "immediate" if u(&d, 1)? == 0 => {
            let v = attr(&attr(&d, 2)?.nested(), 2)?.nested();
            Expr::Verdict {
                code: u(&v, 1)?,
                chain: v.iter().find(|a| a.ty == 2).map(Attr::string),
            }
        }
        "immediate" => Expr::Immediate { data: data(&d, 2)? },
        "numgen" => Expr::Numgen {
            modulus: u(&d, 2)?,
            offset: opt(&d, 4),
        },
        "hash" => Expr::Hash {
            modulus: u(&d, 4)?,
            seed: u(&d, 5)?,
            offset: opt(&d, 6),
        },
        "fib" => Expr::Fib {
            result: u(&d, 2)?,
            flags: u(&d, 3)?,
        },
        "byteorder" => Expr::Byteorder,
        "nat" => Expr::Nat,
        "masq" => Expr::Masq,
        "redir" => Expr::Redir,
        "socket" => Expr::Socket { key: u(&d, 1)? },
        "reject" => Expr::Reject,
        "dynset" => Expr::Dynset {
            set: attr(&d, 1)?.string(),
        },
        other => return Err(format!("expression {other}")),
    })
}
