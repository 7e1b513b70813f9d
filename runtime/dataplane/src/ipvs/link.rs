//! The dummy device `wasp-ipvs0` and its addresses, over rtnetlink (`netlink-packet-route`
//! for the messages): IPVS only sees packets addressed to a local address, so every service
//! address that is not already the node's goes on it.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::Netlink;
use crate::core::Family;

/// The device's name.
pub const DEVICE: &str = "wasp-ipvs0";

/// One rtnetlink message as bytes.
pub fn bytes(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

fn by_name(name: &str) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.into()));
    RouteNetlinkMessage::GetLink(link)
}

/// The message that creates the device, up.
pub fn create_device() -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes.push(LinkAttribute::IfName(DEVICE.into()));
    link.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Dummy,
        )]));
    RouteNetlinkMessage::NewLink(link)
}

/// The message that deletes the device (and its addresses).
pub fn delete_device(index: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    RouteNetlinkMessage::DelLink(link)
}

/// The message that adds (or, `add` false, removes) `ip` on device `index`, as one host
/// address; IPv6 ones skip duplicate address detection, so they answer at once.
pub fn address(index: u32, ip: IpAddr, add: bool) -> RouteNetlinkMessage {
    let family = Family::of(&ip);
    let mut a = AddressMessage::default();
    a.header.family = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    a.header.prefix_len = family.host_prefix();
    a.header.index = index;
    a.header.flags = AddressHeaderFlags::Nodad;
    a.attributes.push(AddressAttribute::Local(ip));
    a.attributes.push(AddressAttribute::Address(ip));
    if add {
        RouteNetlinkMessage::NewAddress(a)
    } else {
        RouteNetlinkMessage::DelAddress(a)
    }
}

fn parse(reply: &super::netlink::Reply) -> Option<RouteNetlinkMessage> {
    let mut whole = Vec::with_capacity(16 + reply.payload.len());
    whole.extend_from_slice(&((16 + reply.payload.len()) as u32).to_ne_bytes());
    whole.extend_from_slice(&reply.kind.to_ne_bytes());
    whole.extend_from_slice(&[0u8; 10]);
    whole.extend_from_slice(&reply.payload);
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&whole)
        .ok()?
        .payload
    {
        NetlinkPayload::InnerMessage(m) => Some(m),
        _ => None,
    }
}

/// The index of device `name`, if it exists.
///
/// # Errors
/// Fails when the socket fails.
pub fn index(nl: &mut Netlink, name: &str) -> io::Result<Option<u32>> {
    let seq = nl.seq();
    let replies = match nl.request(&bytes(by_name(name), 0, seq), seq) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        r => r?,
    };
    Ok(replies.iter().find_map(|r| match parse(r)? {
        RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
        _ => None,
    }))
}

/// The device's index, creating it when it does not exist.
///
/// # Errors
/// Names what the kernel refused.
pub fn ensure_device(nl: &mut Netlink) -> io::Result<u32> {
    if let Some(i) = index(nl, DEVICE)? {
        return Ok(i);
    }
    let seq = nl.seq();
    let msg = bytes(create_device(), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq);
    nl.request(&msg, seq)?;
    index(nl, DEVICE)?.ok_or_else(|| io::Error::other(format!("{DEVICE} was not created")))
}

/// Every address on every device: `(device index, address)`.
///
/// # Errors
/// Fails when the socket fails.
pub fn addresses(nl: &mut Netlink) -> io::Result<Vec<(u32, IpAddr)>> {
    let seq = nl.seq();
    let msg = bytes(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
        seq,
    );
    let mut out = Vec::new();
    for r in nl.request(&msg, seq)? {
        if let Some(RouteNetlinkMessage::NewAddress(a)) = parse(&r) {
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            out.extend(ip.map(|ip| (a.header.index, ip)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: RouteNetlinkMessage) {
        let b = bytes(msg.clone(), NLM_F_ACK, 7);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&b).unwrap();
        assert_eq!(back.header.sequence_number, 7);
        assert_eq!(back.payload, NetlinkPayload::InnerMessage(msg.clone()));
        // Re-encoding what was read gives the same bytes.
        let NetlinkPayload::InnerMessage(again) = back.payload else {
            unreachable!()
        };
        assert_eq!(bytes(again, NLM_F_ACK, 7), b, "{msg:?}");
    }

    #[test]
    fn every_message_sent_reads_back_byte_for_byte() {
        round_trip(create_device());
        round_trip(delete_device(9));
        round_trip(by_name(DEVICE));
        round_trip(address(9, "10.96.0.10".parse().unwrap(), true));
        round_trip(address(9, "fd00:96::10".parse().unwrap(), false));
        round_trip(RouteNetlinkMessage::GetAddress(AddressMessage::default()));
    }

    #[test]
    fn a_service_address_is_one_host_without_dad() {
        let RouteNetlinkMessage::NewAddress(a) = address(3, "fd00::1".parse().unwrap(), true)
        else {
            panic!("an add is NewAddress")
        };
        assert_eq!((a.header.prefix_len, a.header.index), (128, 3));
        assert!(a.header.flags.contains(AddressHeaderFlags::Nodad));
    }
}
