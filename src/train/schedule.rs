//! Learning rate per optimizer step: linear warm-up from 0, then cosine / linear decay to 0, or
//! constant (the `get_*_schedule_with_warmup` family of transformers).

use crate::recipe::Schedule;

/// Learning rate for 0-based optimizer step `step` of `total`.
pub fn lr_at(schedule: Schedule, base: f64, warmup: usize, total: usize, step: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        assert_eq!(lr_at(Schedule::Cosine, 1.0, 4, 14, 0), 0.25);
        assert_eq!(lr_at(Schedule::Cosine, 1.0, 4, 14, 3), 1.0);
        assert_eq!(lr_at(Schedule::Cosine, 1.0, 4, 14, 4), 1.0);
        assert!((lr_at(Schedule::Cosine, 1.0, 4, 14, 9) - 0.5).abs() < 1e-12);
        assert!((lr_at(Schedule::Linear, 1.0, 0, 10, 5) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(Schedule::Constant, 2.0, 0, 10, 9), 2.0);
    }
}
