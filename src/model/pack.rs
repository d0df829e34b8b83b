//! Laying sequences out as batch rows for one forward: plain sequences one per row, or a
//! preference pair packed into one row whose prompt is computed once (prefix sharing).
//!
//! Owns: row contents, RoPE positions and branches ([`RowLayout`]), and which row position
//! predicts each scored token. Does not: run the model (see `Model::logps`).

use super::ops::attention::RowLayout;
use super::Scored;

/// Right-padded rows and the scored tokens of each output sequence.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `rows.len() * seq_len` ids, row-major, padded with 0.
    pub ids: Vec<u32>,
    pub rows: Vec<RowLayout>,
    pub seq_len: usize,
    /// Per output sequence: `(flat index b·seq_len + i of the hidden state that predicts it,
    /// target id)` for each scored token, in order.
    pub scored: Vec<Vec<(u32, u32)>>,
}

fn check(s: &Scored, what: &str) -> candle_core::Result<()> {
    if s.score_from == 0 || s.score_from > s.ids.len() {
        candle_core::bail!(
            "{what}: scored part starts at {} of {} tokens (needs >= 1)",
            s.score_from,
            s.ids.len()
        )
    }
    Ok(())
}

impl Packed {
    /// One row per sequence; output sequences in the order given.
    pub fn sequences(seqs: &[Scored]) -> candle_core::Result<Self> {
        let seq_len = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let mut ids = vec![0u32; seqs.len() * seq_len];
        let mut scored = Vec::with_capacity(seqs.len());
        for (b, s) in seqs.iter().enumerate() {
            check(s, &format!("sequence {b}"))?;
            ids[b * seq_len..b * seq_len + s.ids.len()].copy_from_slice(s.ids);
            let base = b * seq_len;
            scored.push(
                (s.score_from..s.ids.len())
                    .map(|t| ((base + t - 1) as u32, s.ids[t]))
                    .collect(),
            );
        }
        Ok(Self {
            ids,
            rows: seqs
                .iter()
                .map(|s| RowLayout::linear(s.ids.len()))
                .collect(),
            seq_len,
            scored,
        })
    }

    /// One row per `(chosen, rejected)` pair: their longest common prefix `p` once, then the
    /// rest of chosen (positions `p..`), then the rest of rejected (positions `p..` again),
    /// each completion hidden from the other. Output sequences: every chosen, then every
    /// rejected (the order of [`Packed::sequences`] over `chosen ++ rejected`).
    pub fn pairs(pairs: &[(Scored, Scored)]) -> candle_core::Result<Self> {
        let mut layouts = Vec::with_capacity(pairs.len());
        let mut row_ids = Vec::with_capacity(pairs.len());
        let mut chosen = Vec::with_capacity(pairs.len());
        let mut rejected = Vec::with_capacity(pairs.len());
        for (b, (c, r)) in pairs.iter().enumerate() {
            check(c, &format!("pair {b} chosen"))?;
            check(r, &format!("pair {b} rejected"))?;
            let p = c.ids.iter().zip(r.ids).take_while(|(x, y)| x == y).count();
            let (nc, nr) = (c.ids.len(), r.ids.len());
            let mut ids = c.ids.to_vec();
            ids.extend_from_slice(&r.ids[p..]);
            let mut pos: Vec<usize> = (0..nc).collect();
            pos.extend(p..nr);
            let mut branch = vec![0u8; p];
            branch.extend(std::iter::repeat_n(1u8, nc - p));
            branch.extend(std::iter::repeat_n(2u8, nr - p));
            // row index of token t of each side
            let at_c = |t: usize| t;
            let at_r = move |t: usize| if t < p { t } else { nc + t - p };
            chosen.push(
                (c.score_from..nc)
                    .map(|t| (at_c(t - 1), c.ids[t]))
                    .collect::<Vec<_>>(),
            );
            rejected.push(
                (r.score_from..nr)
                    .map(|t| (at_r(t - 1), r.ids[t]))
                    .collect::<Vec<_>>(),
            );
            layouts.push(RowLayout { pos, branch });
            row_ids.push(ids);
        }
        let seq_len = row_ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![0u32; pairs.len() * seq_len];
        for (b, r) in row_ids.iter().enumerate() {
            ids[b * seq_len..b * seq_len + r.len()].copy_from_slice(r);
        }
        let flat = |b: usize, v: Vec<(usize, u32)>| {
            v.into_iter()
                .map(|(i, id)| ((b * seq_len + i) as u32, id))
                .collect::<Vec<_>>()
        };
        let mut scored: Vec<Vec<(u32, u32)>> = chosen
            .into_iter()
            .enumerate()
            .map(|(b, v)| flat(b, v))
            .collect();
        scored.extend(rejected.into_iter().enumerate().map(|(b, v)| flat(b, v)));
        Ok(Self {
            ids,
            rows: layouts,
            seq_len,
            scored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_shares_its_prompt_and_each_completion_restarts_after_it() {
        static C: [u32; 5] = [1, 2, 3, 10, 11];
        static R: [u32; 6] = [1, 2, 3, 20, 21, 22];
        let s = |ids: &'static [u32]| Scored { ids, score_from: 3 };
        let p = Packed::pairs(&[(s(&C), s(&R))]).unwrap();
        assert_eq!(p.ids, [1, 2, 3, 10, 11, 20, 21, 22]);
        assert_eq!(p.rows[0].pos, [0, 1, 2, 3, 4, 3, 4, 5]);
        assert_eq!(p.rows[0].branch, [0, 0, 0, 1, 1, 2, 2, 2]);
        // chosen scores 10 (from row 2: the prompt's last token), 11 (from 3)
        assert_eq!(p.scored[0], [(2, 10), (3, 11)]);
        // rejected scores 20 from row 2 too, then 21 from 5 and 22 from 6
        assert_eq!(p.scored[1], [(2, 20), (5, 21), (6, 22)]);
        assert_eq!(p.rows[0].len(), 8);
    }

    #[test]
    fn the_shared_part_is_the_common_prefix_even_inside_the_completions() {
        static C: [u32; 4] = [5, 6, 7, 8];
        static R: [u32; 3] = [5, 6, 9];
        let p = Packed::pairs(&[(
            Scored {
                ids: &C,
                score_from: 1,
            },
            Scored {
                ids: &R,
                score_from: 1,
            },
        )])
        .unwrap();
        assert_eq!(p.ids, [5, 6, 7, 8, 9]);
        assert_eq!(p.rows[0].branch, [0, 0, 1, 1, 2]);
        assert_eq!(p.scored[0], [(0, 6), (1, 7), (2, 8)]);
        assert_eq!(p.scored[1], [(0, 6), (1, 9)]);
    }
}
