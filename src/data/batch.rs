//! Training data: encoded pairs truncated to the recipe's lengths, split, shuffled per epoch, and
//! cut into micro-batches.
//!
//! Truncation (TRL's rules, made explicit): a prompt longer than `max_prompt_length` keeps its end
//! (or its start, `truncation: keep_start`; BOS, when present, is always kept); then the completion
//! is cut to fit `max_length`. A pair whose completion would be emptied on either side is dropped
//! and counted, never trained on as an empty sequence.

use crate::recipe::{DataSection, Truncation};
use crate::rng::SplitMix64;
use crate::tokenizer::Tokenizer;

use super::{encode_pair, EncodedSide, Origin, PreferenceRecord};

/// One training pair, ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainPair {
    /// Index of the record among its sources (0-based), for the reference cache and messages.
    pub index: usize,
    pub chosen: EncodedSide,
    pub rejected: EncodedSide,
}

/// The pairs of one file (or split) and what was dropped.
#[derive(Debug, Clone)]
pub struct PairSet {
    pub pairs: Vec<TrainPair>,
    /// Pairs dropped because truncation would have emptied a completion.
    pub dropped: usize,
    pub truncated: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Data(#[from] super::DataError),
    #[error("{at}: {msg}")]
    Record { at: Origin, msg: String },
    #[error("{what}: all {n} pairs are too long: with data.max_length = {max_length} no completion token is left; raise data.max_length or set data.max_prompt_length")]
    AllDropped {
        what: String,
        n: usize,
        max_length: usize,
    },
}

/// Limits applied to every side of every pair.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_length: usize,
    pub max_prompt_length: Option<usize>,
    pub truncation: Truncation,
    pub bos: Option<u32>,
}

impl Limits {
    pub fn from_recipe(d: &DataSection, tok: &Tokenizer) -> Self {
        Self {
            max_length: d.max_length,
            max_prompt_length: d.max_prompt_length,
            truncation: d.truncation,
            bos: if tok.add_bos() { tok.bos_id() } else { None },
        }
    }

    /// The side cut to the limits, or `None` if no completion token would be left.
    pub fn apply(&self, side: &EncodedSide) -> Option<EncodedSide> {
        let (prompt, completion) = side.ids.split_at(side.prompt_len);
        let mut prompt = prompt.to_vec();
        if let Some(maxp) = self.max_prompt_length {
            if prompt.len() > maxp {
                let keep_bos = self.bos.is_some() && prompt.first() == self.bos.as_ref();
                prompt = match (self.truncation, keep_bos) {
                    (Truncation::KeepEnd, true) => std::iter::once(prompt[0])
                        .chain(prompt[prompt.len() - (maxp - 1)..].iter().copied())
                        .collect(),
                    (Truncation::KeepEnd, false) => prompt[prompt.len() - maxp..].to_vec(),
                    (Truncation::KeepStart, _) => prompt[..maxp].to_vec(),
                };
            }
        }
        let room = self.max_length.saturating_sub(prompt.len());
        let completion = &completion[..completion.len().min(room)];
        if completion.is_empty() || prompt.is_empty() {
            return None;
        }
        let prompt_len = prompt.len();
        prompt.extend_from_slice(completion);
        Some(EncodedSide {
            ids: prompt,
            prompt_len,
        })
    }
}

/// One record's token ids before truncation (what the token cache keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub index: usize,
    pub chosen: EncodedSide,
    pub rejected: EncodedSide,
}

/// Tokenize one record (TRL's contract, `encode`); an empty prompt without BOS is refused.
pub fn encode_record(tok: &Tokenizer, r: &PreferenceRecord) -> Result<Encoded, BatchError> {
    let p = encode_pair(tok, r).map_err(|e| BatchError::Record {
        at: r.at.clone(),
        msg: e.to_string(),
    })?;
    if p.prompt_ids.is_empty() {
        return Err(BatchError::Record {
            at: r.at.clone(),
            msg: "the prompt is empty and the model adds no BOS token, so the first completion token has no context; give a non-empty prompt".into(),
        });
    }
    Ok(Encoded {
        index: r.index,
        chosen: p.chosen,
        rejected: p.rejected,
    })
}

/// Builds a [`PairSet`] one encoded record at a time, truncating each as it comes, so only the
/// kept tokens stay in memory.
pub struct PairSetBuilder<'a> {
    limits: &'a Limits,
    set: PairSet,
    seen: usize,
}

impl<'a> PairSetBuilder<'a> {
    pub fn new(limits: &'a Limits) -> Self {
        Self {
            limits,
            set: PairSet {
                pairs: Vec::new(),
                dropped: 0,
                truncated: 0,
            },
            seen: 0,
        }
    }

    pub fn push(&mut self, e: &Encoded) {
        self.seen += 1;
        match (self.limits.apply(&e.chosen), self.limits.apply(&e.rejected)) {
            (Some(c), Some(rj)) => {
                if c != e.chosen || rj != e.rejected {
                    self.set.truncated += 1;
                }
                self.set.pairs.push(TrainPair {
                    index: e.index,
                    chosen: c,
                    rejected: rj,
                });
            }
            _ => self.set.dropped += 1,
        }
    }

    /// The set, or an error naming `what` when truncation left no pair.
    pub fn finish(mut self, what: &str) -> Result<PairSet, BatchError> {
        if self.set.pairs.is_empty() {
            return Err(BatchError::AllDropped {
                what: what.to_string(),
                n: self.seen,
                max_length: self.limits.max_length,
            });
        }
        self.set.pairs.shrink_to_fit();
        Ok(self.set)
    }
}

/// Encode and truncate `records` (read from `what`, for messages).
pub fn load_pairs(
    records: &[PreferenceRecord],
    what: &str,
    tok: &Tokenizer,
    limits: &Limits,
) -> Result<PairSet, BatchError> {
    let mut b = PairSetBuilder::new(limits);
    for r in records {
        b.push(&encode_record(tok, r)?);
    }
    b.finish(what)
}

/// Split off `fraction` of `set` as a held-out set, chosen by `seed` (deterministic).
pub fn split_eval(set: PairSet, fraction: f64, seed: u64) -> (PairSet, PairSet) {
    let n = set.pairs.len();
    let n_eval = ((n as f64) * fraction).round() as usize;
    let n_eval = n_eval.min(n.saturating_sub(1));
    let perm = SplitMix64::keyed(&[seed, 0xe7a1]).permutation(n);
    let eval_idx: std::collections::HashSet<usize> = perm[..n_eval].iter().copied().collect();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (i, p) in set.pairs.into_iter().enumerate() {
        if eval_idx.contains(&i) {
            eval.push(p);
        } else {
            train.push(p);
        }
    }
    (
        PairSet {
            pairs: train,
            dropped: set.dropped,
            truncated: set.truncated,
        },
        PairSet {
            pairs: eval,
            dropped: 0,
            truncated: 0,
        },
    )
}

/// The order pairs are visited in: a fresh permutation per epoch from the seed, walked by a
/// position that a checkpoint can store (and that depends only on how many pairs were consumed).
#[derive(Debug, Clone)]
pub struct Order {
    n: usize,
    seed: u64,
}

impl Order {
    pub fn new(n: usize, seed: u64) -> Self {
        Self { n, seed }
    }

    /// The pair indices of the `count` pairs starting at global position `pos` (pairs consumed
    /// so far); crosses epoch boundaries.
    pub fn take(&self, pos: usize, count: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(count);
        let mut epoch = pos / self.n;
        let mut perm = self.permutation(epoch);
        for p in pos..pos + count {
            if p / self.n != epoch {
                epoch = p / self.n;
                perm = self.permutation(epoch);
            }
            out.push(perm[p % self.n]);
        }
        out
    }

    /// The first `count` micro-batches of `size` pairs, in training order (`take` at positions
    /// 0, size, 2·size, ...), one permutation per epoch.
    pub fn batches(&self, count: usize, size: usize) -> impl Iterator<Item = Vec<usize>> + '_ {
        let mut epoch = (usize::MAX, Vec::new());
        (0..if self.n == 0 { 0 } else { count }).map(move |b| {
            (b * size..(b + 1) * size)
                .map(|p| {
                    if p / self.n != epoch.0 {
                        epoch = (p / self.n, self.permutation(p / self.n));
                    }
                    epoch.1[p % self.n]
                })
                .collect()
        })
    }

    fn permutation(&self, epoch: usize) -> Vec<usize> {
        SplitMix64::keyed(&[self.seed, 0xda7a, epoch as u64]).permutation(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(prompt: &[u32], completion: &[u32]) -> EncodedSide {
        EncodedSide {
            ids: prompt.iter().chain(completion).copied().collect(),
            prompt_len: prompt.len(),
        }
    }

    #[test]
    fn truncation_keeps_bos_and_the_prompt_end_then_cuts_the_completion() {
        let l = Limits {
            max_length: 6,
            max_prompt_length: Some(3),
            truncation: Truncation::KeepEnd,
            bos: Some(1),
        };
        let s = l
            .apply(&side(&[1, 10, 11, 12, 13], &[20, 21, 22, 23]))
            .unwrap();
        assert_eq!(s, side(&[1, 12, 13], &[20, 21, 22]));
        let l = Limits {
            truncation: Truncation::KeepStart,
            ..l
        };
        assert_eq!(
            l.apply(&side(&[1, 10, 11, 12, 13], &[20])).unwrap(),
            side(&[1, 10, 11], &[20])
        );
    }

    #[test]
    fn a_completion_that_would_be_emptied_drops_the_side() {
        let l = Limits {
            max_length: 4,
            max_prompt_length: None,
            truncation: Truncation::KeepEnd,
            bos: None,
        };
        assert!(l.apply(&side(&[1, 2, 3, 4], &[5])).is_none());
        assert_eq!(
            l.apply(&side(&[1, 2, 3], &[5, 6])).unwrap(),
            side(&[1, 2, 3], &[5])
        );
    }

    #[test]
    fn eval_fraction_splits_deterministically_without_overlap() {
        let pairs: Vec<TrainPair> = (0..20)
            .map(|i| TrainPair {
                index: i,
                chosen: side(&[1], &[2]),
                rejected: side(&[1], &[3]),
            })
            .collect();
        let set = PairSet {
            pairs,
            dropped: 1,
            truncated: 0,
        };
        let (t, e) = split_eval(set.clone(), 0.25, 5);
        assert_eq!((t.pairs.len(), e.pairs.len()), (15, 5));
        let mut all: Vec<usize> = t.pairs.iter().chain(&e.pairs).map(|p| p.index).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        let (_, e2) = split_eval(set.clone(), 0.25, 5);
        assert_eq!(e.pairs, e2.pairs);
        let (_, e3) = split_eval(set, 0.25, 6);
        assert_ne!(e.pairs, e3.pairs, "the seed chooses the held-out pairs");
    }

    #[test]
    fn batches_are_the_takes_in_order() {
        let o = Order::new(7, 3);
        let all: Vec<Vec<usize>> = o.batches(9, 3).collect();
        assert_eq!(all.len(), 9);
        for (b, idx) in all.iter().enumerate() {
            assert_eq!(*idx, o.take(b * 3, 3), "batch {b}");
        }
        assert_eq!(Order::new(0, 1).batches(4, 2).count(), 0);
    }

    #[test]
    fn order_is_a_permutation_per_epoch_and_resumable() {
        let o = Order::new(5, 9);
        let all = o.take(0, 10);
        let mut e0 = all[..5].to_vec();
        e0.sort();
        assert_eq!(e0, vec![0, 1, 2, 3, 4]);
        assert_ne!(all[..5], all[5..]);
        assert_eq!(o.take(3, 4), all[3..7].to_vec());
    }
}
