//! The UDP thread's cache of encoded answers to plain queries (one question, nothing else),
//! so a repeated question is answered by copying bytes instead of decoding and encoding
//! messages. It holds answers for one version of the records and is emptied when they change.

use std::collections::HashMap;

/// The most bytes of questions and answers held; past it the cache starts over.
const CAPACITY: usize = 4 << 20;

/// The header's size; the question follows it.
const HEADER: usize = 12;

/// Encoded answers by their question (lowercased), for one version of the records.
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
        let question = plain(query)?;
        let mut buf = [0u8; KEY];
        let cached = self.by_question.get(key(question, &mut buf)?)?;
        let mut out = cached.to_vec();
        out[..2].copy_from_slice(&query[..2]);
        out[2] = (out[2] & !1) | (query[2] & 1);
        out[HEADER..HEADER + question.len()].copy_from_slice(question);
        Some(out)
    }

    /// Keeps `answer`, the encoded response to `query`, when the query is plain and the
    /// answer repeats its question right after the header.
    pub(super) fn learn(&mut self, query: &[u8], answer: &[u8]) {
        let Some(question) = plain(query) else {
            return;
        };
        let echoed = answer.get(HEADER..HEADER + question.len());
        if echoed.is_none_or(|e| !e.eq_ignore_ascii_case(question)) {
            return;
        }
        if self.bytes + question.len() + answer.len() > CAPACITY {
            self.by_question.clear();
            self.bytes = 0;
        }
        self.bytes += question.len() + answer.len();
        let mut buf = [0u8; KEY];
        let Some(key) = key(question, &mut buf) else {
            return;
        };
        self.by_question.insert(key.into(), answer.into());
    }
}

/// The longest question: a name of 255 bytes, then its type and class.
const KEY: usize = 259;

/// `question` with its name in lower case (the type and class, its last 4 bytes, as they are),
/// in `buf`; `None` when it is longer than a question can be.
fn key<'a>(question: &[u8], buf: &'a mut [u8; KEY]) -> Option<&'a [u8]> {
    let key = buf.get_mut(..question.len())?;
    key.copy_from_slice(question);
    let name = key.len() - 4;
    key[..name].make_ascii_lowercase();
    Some(key)
}

/// The question of a standard query with one question and no other records (no EDNS), which
/// is then the rest of the message.
fn plain(query: &[u8]) -> Option<&[u8]> {
    let header = query.get(..HEADER)?;
    let standard = header[2] & 0xf8 == 0; // QR 0 (a query), opcode 0 (QUERY)
    let counts = header[4..] == [0, 1, 0, 0, 0, 0, 0, 0]; // QD 1, AN NS AR 0
    (standard && counts && query.len() > HEADER + 4).then(|| &query[HEADER..])
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

    #[test]
    fn only_plain_queries_are_kept() {
        let mut cache = Answers::default();
        let mut edns = query(1, "web.shop.svc.cluster.local.", false);
        edns[11] = 1; // AR 1: an OPT record would follow
        cache.learn(&edns, &edns);
        assert!(cache.by_question.is_empty());
        let plain = query(1, "web.shop.svc.cluster.local.", false);
        cache.learn(&plain, &plain[..20]);
        assert!(cache.by_question.is_empty(), "no question echoed");
        cache.learn(&plain, &plain);
        assert_eq!(cache.by_question.len(), 1);
    }
}
