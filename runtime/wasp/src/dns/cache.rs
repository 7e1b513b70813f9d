//! The UDP thread's cache of encoded answers to simple queries (one question, and at most an
//! EDNS OPT record after it), so a repeated question is answered by copying bytes instead of
//! decoding and encoding messages. It holds answers for one version of the records and is
//! emptied when they change.

use std::collections::HashMap;

/// The most bytes of questions and answers held; past it the cache starts over.
const CAPACITY: usize = 4 << 20;

/// The header's size; the question follows it.
const HEADER: usize = 12;

/// Encoded answers by their query after the header (the question's name lowercased, then
/// the OPT record as sent, whose size and flags shape the answer), for one version of the
/// records.
#[derive(Default)]
pub(super) struct Answers {
    version: u64,
    by_question: HashMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
}

impl Answers {
    /// Forgets every answer when the records are no longer those of `version`.
    pub(super) fn follow(&mut self, version: u64) {
        if version != self.version {
            self.by_question.clear();
            self.bytes = 0;
            self.version = version;
        }
    }

    /// The answer to `query` when its question was answered before: the same bytes with the
    /// query's ID, recursion-desired bit and question (as the client spelled it).
    pub(super) fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let (question, rest) = simple(query)?;
        let mut buf = [0u8; KEY];
        let cached = self.by_question.get(key(question, rest, &mut buf)?)?;
        let mut out = cached.to_vec();
        out[..2].copy_from_slice(&query[..2]);
        out[2] = (out[2] & !1) | (query[2] & 1);
        out[HEADER..HEADER + question.len()].copy_from_slice(question);
        Some(out)
    }

    /// Keeps `answer`, the encoded response to `query`, when the query is simple and the
    /// answer repeats its question right after the header.
    pub(super) fn learn(&mut self, query: &[u8], answer: &[u8]) {
        let Some((question, rest)) = simple(query) else {
            return;
        };
        let echoed = answer.get(HEADER..HEADER + question.len());
        if echoed.is_none_or(|e| !e.eq_ignore_ascii_case(question)) {
            return;
        }
        if self.bytes + rest.len() + answer.len() > CAPACITY {
            self.by_question.clear();
            self.bytes = 0;
        }
        self.bytes += rest.len() + answer.len();
        let mut buf = [0u8; KEY];
        let Some(key) = key(question, rest, &mut buf) else {
            return;
        };
        self.by_question.insert(key.into(), answer.into());
    }
}

/// The longest key: a question (a name of 255 bytes, then its type and class), then an OPT
/// record with a few options.
const KEY: usize = 512;

/// The query after the header, `rest`, with the name of its `question` (which starts it) in
/// lower case, in `buf`; `None` when it is longer than the buffer.
fn key<'a>(question: &[u8], rest: &[u8], buf: &'a mut [u8; KEY]) -> Option<&'a [u8]> {
    let key = buf.get_mut(..rest.len())?;
    key.copy_from_slice(rest);
    key[..question.len() - 4].make_ascii_lowercase();
    Some(key)
}

/// The question of a standard query with one question, no answer or authority records and
/// at most one additional record, an EDNS OPT (RFC 6891) that ends the message; and the
/// message after the header.
fn simple(query: &[u8]) -> Option<(&[u8], &[u8])> {
    let header = query.get(..HEADER)?;
    let standard = header[2] & 0xf8 == 0; // QR 0 (a query), opcode 0 (QUERY)
    let additional = match header[4..] {
        [0, 1, 0, 0, 0, 0, 0, 0] => false, // QD 1, AN NS AR 0
        [0, 1, 0, 0, 0, 0, 0, 1] => true,  // and AR 1
        _ => return None,
    };
    if !standard {
        return None;
    }
    let rest = &query[HEADER..];
    // The name: labels up to the root, uncompressed (a query's name is never a pointer).
    let mut at = 0;
    loop {
        let len = usize::from(*rest.get(at)?);
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let question = rest.get(..at + 4)?;
    let opt = &rest[question.len()..];
    let fits = if additional {
        // Root name, TYPE 41, CLASS (payload size), TTL (flags), RDLENGTH, RDATA.
        opt.len() >= 11
            && opt[..3] == [0, 0, 41]
            && usize::from(u16::from_be_bytes([opt[9], opt[10]])) == opt.len() - 11
    } else {
        opt.is_empty()
    };
    fits.then_some((question, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(id: u16, name: &str, rd: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id).set_recursion_desired(rd);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    #[test]
    fn a_repeated_question_gets_the_answer_with_its_own_id_flag_and_spelling() {
        let mut cache = Answers::default();
        let first = query(7, "web.shop.svc.cluster.local.", false);
        let mut answer = first.clone();
        answer[2] |= 0x84; // QR, AA
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        answer[7] = 1; // AN 1
        cache.learn(&first, &answer);
        let again = query(9, "WEB.Shop.svc.cluster.local.", true);
        let out = cache.answer(&again).expect("cached");
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.id(), 9);
        assert!(m.recursion_desired() && m.authoritative());
        assert_eq!(
            m.queries()[0].name().to_ascii(),
            "WEB.Shop.svc.cluster.local."
        );
        assert_eq!(m.answers().len(), 1);
        assert!(
            cache
                .answer(&query(9, "db.shop.svc.cluster.local.", true))
                .is_none()
        );
        cache.follow(1);
        assert!(
            cache.answer(&again).is_none(),
            "a new version of the records empties it"
        );
    }

    fn edns(id: u16, name: &str, payload: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(payload);
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    #[test]
    fn only_simple_queries_are_kept_and_an_edns_one_by_its_opt_record() {
        let mut cache = Answers::default();
        let mut broken = query(1, "web.shop.svc.cluster.local.", false);
        broken[11] = 1; // AR 1, but no OPT record follows
        cache.learn(&broken, &broken);
        assert!(cache.by_question.is_empty());
        // An EDNS query is kept by its OPT record too: another payload size is another key.
        let big = edns(1, "web.shop.svc.cluster.local.", 1232);
        cache.learn(&big, &big);
        assert_eq!(cache.by_question.len(), 1);
        let out = cache.answer(&edns(5, "Web.shop.svc.cluster.local.", 1232));
        let m = Message::from_vec(&out.expect("cached")).unwrap();
        assert_eq!(m.id(), 5);
        assert_eq!(
            m.queries()[0].name().to_ascii(),
            "Web.shop.svc.cluster.local."
        );
        assert!(
            cache
                .answer(&edns(5, "web.shop.svc.cluster.local.", 512))
                .is_none()
        );
        assert!(
            cache
                .answer(&query(5, "web.shop.svc.cluster.local.", false))
                .is_none()
        );
        cache.follow(1);
        let plain = query(1, "web.shop.svc.cluster.local.", false);
        cache.learn(&plain, &plain[..20]);
        assert!(cache.by_question.is_empty(), "no question echoed");
        cache.learn(&plain, &plain);
        assert_eq!(cache.by_question.len(), 1);
    }
}
