//! A Selection as each kernel realises it.
//!
//! - **Chances** (iptables `statistic`, the nftables affinity rules): endpoint i is taken
//!   with probability wᵢ / Σⱼ≥ᵢ wⱼ, in order, so each endpoint's share is wᵢ / Σ w.
//! - **Slots** (nftables maps, iptables HMARK marks): a weighted selection has one slot per
//!   unit of weight, after dividing by the weights' gcd; a hashed one its table, whose slots
//!   naming another family's endpoint go to one of this family's.
//! - **The equal-weight fallback**: a port without a selection is spread equally.

use std::borrow::Cow;

use wasp_model::{Endpoint, Selection};

/// The most slots a weighted selection is spread over; below it weights are exact.
pub const MAX_WEIGHT_SLOTS: u64 = 4096;

/// The port's selection, or equal weights over its `n` endpoints when it has none.
pub fn or_equal(sel: Option<&Selection>, n: usize) -> Cow<'_, Selection> {
    match sel {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(Selection::equal(n)),
    }
}

/// One step of a sequential pick: take `endpoint` with probability `weight / rest`; `None`
/// for the last one, which takes what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chance<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Its index in the port's endpoints.
    pub index: usize,
    /// `(weight, rest)`: the chance is weight / rest; `None` on the last step.
    pub odds: Option<(u32, u64)>,
}

/// The sequential chances over `eps` (with their indices) by `weights`; weight 0 is never
/// taken, and an index past the weights counts as weight 1.
pub fn chances<'a>(eps: &[(usize, &'a Endpoint)], weights: &[u32]) -> Vec<Chance<'a>> {
    let live: Vec<(usize, &Endpoint, u32)> = eps
        .iter()
        .map(|&(i, e)| (i, e, weights.get(i).copied().unwrap_or(1)))
        .filter(|(_, _, w)| *w > 0)
        .collect();
    let mut rest: u64 = live.iter().map(|(_, _, w)| u64::from(*w)).sum();
    let last = live.len().saturating_sub(1);
    live.iter()
        .enumerate()
        .map(|(k, &(index, endpoint, w))| {
            let odds = (k < last).then_some((w, rest));
            rest -= u64::from(w);
            Chance {
                endpoint,
                index,
                odds,
            }
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One slot per unit of weight, after dividing the weights by their greatest common divisor
/// (3:1 is 4 slots, equal weights one slot each). Past [`MAX_WEIGHT_SLOTS`] the weights are
/// scaled down, keeping at least one slot for every endpoint of non-zero weight.
pub fn weighted_slots<'a>(eps: &[(usize, &'a Endpoint)], weights: &[u32]) -> Vec<&'a Endpoint> {
    let live: Vec<(&Endpoint, u64)> = eps
        .iter()
        .map(|&(i, e)| (e, u64::from(weights.get(i).copied().unwrap_or(1))))
        .filter(|(_, w)| *w > 0)
        .collect();
    let g = live.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let total: u64 = live.iter().map(|(_, w)| w / g).sum();
    let scale = |w: u64| {
        if total <= MAX_WEIGHT_SLOTS {
            w / g
        } else {
            (w / g * MAX_WEIGHT_SLOTS / total).max(1)
        }
    };
    live.iter()
        .flat_map(|&(e, w)| std::iter::repeat_n(e, scale(w) as usize))
        .collect()
}

/// The table's endpoint for each slot, among `eps` (one family's, with their indices into
/// `all`). A slot naming an endpoint of the other family goes to one of this family's, chosen
/// by slot number.
pub fn hashed_slots<'a>(
    table: &[u32],
    all: &'a [Endpoint],
    eps: &[(usize, &'a Endpoint)],
) -> Vec<&'a Endpoint> {
    if eps.is_empty() {
        return Vec::new();
    }
    table
        .iter()
        .enumerate()
        .map(|(s, &i)| match all.get(i as usize) {
            Some(e) if eps.iter().any(|(j, _)| *j == i as usize) => e,
            _ => eps[s % eps.len()].1,
        })
        .collect()
}

/// A table of `m` slots sampled evenly down to at most `max`: the original slot each kept
/// slot stands for. Each sampled slot moves only if its original moved, so the table's
/// consistency is kept.
pub fn sampled(m: usize, max: usize) -> impl Iterator<Item = usize> {
    let n = m.min(max);
    (0..n).map(move |s| s * m / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint::ready(format!("10.0.0.{}", i + 1).parse().unwrap(), 80))
            .collect()
    }

    fn indexed(all: &[Endpoint]) -> Vec<(usize, &Endpoint)> {
        all.iter().enumerate().collect()
    }

    #[test]
    fn chances_give_each_endpoint_its_share() {
        let all = eps(3);
        let c = chances(&indexed(&all), &[1, 0, 3]);
        let odds: Vec<(usize, Option<(u32, u64)>)> = c.iter().map(|c| (c.index, c.odds)).collect();
        // 1/4 for the first, the rest (weight 0 skipped) to the last.
        assert_eq!(odds, [(0, Some((1, 4))), (2, None)]);
        assert!(chances(&indexed(&all), &[0, 0, 0]).is_empty());
    }

    #[test]
    fn weighted_slots_divide_by_the_gcd_and_cap() {
        let all = eps(2);
        assert_eq!(weighted_slots(&indexed(&all), &[6, 2]).len(), 4);
        assert_eq!(weighted_slots(&indexed(&all), &[1, 1]).len(), 2);
        let capped = weighted_slots(&indexed(&all), &[100_000, 1]);
        assert!(capped.len() as u64 <= MAX_WEIGHT_SLOTS + 1);
        assert!(capped.contains(&&all[1]), "a small weight keeps one slot");
    }

    #[test]
    fn hashed_slots_of_another_family_go_to_this_one() {
        let mut all = eps(2);
        all.push(Endpoint::ready("fd00::1".parse().unwrap(), 80));
        let v4: Vec<(usize, &Endpoint)> = indexed(&all).into_iter().take(2).collect();
        let got = hashed_slots(&[2, 1, 0, 2], &all, &v4);
        assert_eq!(got, [&all[0], &all[1], &all[0], &all[1]]);
    }

    #[test]
    fn sampling_keeps_at_most_max_evenly() {
        assert_eq!(sampled(10, 4).collect::<Vec<_>>(), [0, 2, 5, 7]);
        assert_eq!(sampled(3, 256).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn no_selection_means_equal_weights() {
        assert_eq!(*or_equal(None, 3), Selection::equal(3));
        let s = Selection::Weighted(vec![2, 1]);
        assert_eq!(*or_equal(Some(&s), 2), s);
    }
}
