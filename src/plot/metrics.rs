//! Reading a run's `metrics.jsonl` into [`MetricPoint`]s.
//!
//! Owns: one JSON object per line, `"kind"` is `"train"` or `"eval"`, `"step"` a non-negative
//! integer, metric keys named as TRL logs them (`loss`, `rewards/accuracies`, `tokens/s`, ...).
//! Blank lines are skipped; unknown keys are ignored; a known metric that is missing or `null`
//! has no point at that step (serde_json writes a non-finite f64 as `null`); a known metric that
//! is not a number, or any other `"kind"`, is an error naming `file:line`. A last line with no
//! newline that does not parse is skipped, because the trainer may be half-way through
//! appending it. Does not: write metrics (the trainer does) or draw them.

use std::path::Path;

use serde_json::Value;

use super::PlotError;

/// Which loop wrote the line: the JSON `"kind"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Train,
    Eval,
}

/// One line of `metrics.jsonl`. `None`: the key was absent or `null` on that line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPoint {
    pub kind: Kind,
    /// Optimizer step (x axis).
    pub step: u64,
    pub epoch: Option<f64>,
    pub loss: Option<f64>,
    pub rewards_chosen: Option<f64>,
    pub rewards_rejected: Option<f64>,
    /// Fraction of pairs with chosen reward > rejected reward, in 0..=1.
    pub rewards_accuracies: Option<f64>,
    pub rewards_margins: Option<f64>,
    pub logps_chosen: Option<f64>,
    pub logps_rejected: Option<f64>,
    /// Train lines only.
    pub grad_norm: Option<f64>,
    /// Train lines only.
    pub learning_rate: Option<f64>,
    /// Train lines only: JSON key `tokens/s`.
    pub tokens_per_s: Option<f64>,
}

impl MetricPoint {
    /// A point with every metric absent.
    pub fn new(kind: Kind, step: u64) -> Self {
        Self {
            kind,
            step,
            epoch: None,
            loss: None,
            rewards_chosen: None,
            rewards_rejected: None,
            rewards_accuracies: None,
            rewards_margins: None,
            logps_chosen: None,
            logps_rejected: None,
            grad_norm: None,
            learning_rate: None,
            tokens_per_s: None,
        }
    }

    /// The field a JSON key fills; `None` for keys this module does not know (ignored).
    fn slot_mut(&mut self, key: &str) -> Option<&mut Option<f64>> {
        Some(match key {
            "epoch" => &mut self.epoch,
            "loss" => &mut self.loss,
            "rewards/chosen" => &mut self.rewards_chosen,
            "rewards/rejected" => &mut self.rewards_rejected,
            "rewards/accuracies" => &mut self.rewards_accuracies,
            "rewards/margins" => &mut self.rewards_margins,
            "logps/chosen" => &mut self.logps_chosen,
            "logps/rejected" => &mut self.logps_rejected,
            "grad_norm" => &mut self.grad_norm,
            "learning_rate" => &mut self.learning_rate,
            "tokens/s" => &mut self.tokens_per_s,
            _ => return None,
        })
    }
}

/// Read every line of a `metrics.jsonl` file, in file order.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricPoint>, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlotError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let complete_last_line = text.ends_with('\n');
    let n_lines = text.lines().count();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match parse_line(raw) {
            Ok(p) => out.push(p),
            // The writer appends line by line; an unterminated last line may be mid-write.
            Err(_) if i + 1 == n_lines && !complete_last_line => {}
            Err(msg) => {
                return Err(PlotError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg,
                })
            }
        }
    }
    Ok(out)
}

fn parse_line(raw: &str) -> Result<MetricPoint, String> {
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or_else(|| {
        "expected a JSON object like {\"kind\":\"train\",\"step\":1,\"loss\":0.69}".to_string()
    })?;
    let kind = match obj.get("kind") {
        Some(Value::String(s)) if s == "train" => Kind::Train,
        Some(Value::String(s)) if s == "eval" => Kind::Eval,
        Some(other) => {
            return Err(format!(
                "\"kind\" is {other}; expected \"train\" or \"eval\""
            ))
        }
        None => return Err("\"kind\" is missing; expected \"train\" or \"eval\"".into()),
    };
    let step = match obj.get("step") {
        Some(s) => s
            .as_u64()
            .ok_or_else(|| format!("\"step\" is {s}; expected a non-negative integer"))?,
        None => return Err("\"step\" is missing; expected a non-negative integer".into()),
    };
    let mut point = MetricPoint::new(kind, step);
    for (key, value) in obj {
        let Some(slot) = point.slot_mut(key) else {
            continue;
        };
        *slot = match value {
            Value::Null => None,
            Value::Number(n) => n.as_f64(),
            other => return Err(format!("\"{key}\" is {other}; expected a number or null")),
        };
    }
    Ok(point)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const GOOD: &str = r#"{"kind":"train","step":1,"epoch":0.1,"loss":0.69,"rewards/chosen":0.0,"rewards/rejected":0.0,"rewards/accuracies":0.0,"rewards/margins":0.0,"logps/chosen":-40.1,"logps/rejected":-44.0,"grad_norm":1.2,"learning_rate":0.0005,"tokens/s":900.0}

{"kind":"eval","step":1,"loss":0.68,"rewards/accuracies":0.5,"rewards/margins":0.01,"future_key":"ignored"}
{"kind":"train","step":2,"loss":0.6,"rewards/margins":null}
"#;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_train_and_eval_lines() {
        let dir = tempfile::tempdir().unwrap();
        let m = read_metrics(&write(dir.path(), GOOD)).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].kind, m[0].step), (Kind::Train, 1));
        assert_eq!(m[0].rewards_accuracies, Some(0.0));
        assert_eq!(m[0].logps_rejected, Some(-44.0));
        assert_eq!(m[0].tokens_per_s, Some(900.0));
        assert_eq!(
            (m[1].kind, m[1].loss, m[1].grad_norm),
            (Kind::Eval, Some(0.68), None)
        );
        assert_eq!((m[2].loss, m[2].rewards_margins), (Some(0.6), None));
    }

    #[test]
    fn bad_lines_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "{\"kind\":\"train\",\"step\":3,\"loss\":0.5}\n{oops\n",
                2,
                "invalid JSON",
            ),
            (
                "\n{\"kind\":\"test\",\"step\":1}\n",
                2,
                "expected \"train\" or \"eval\"",
            ),
            (
                "{\"kind\":\"eval\",\"loss\":0.5}\n",
                1,
                "\"step\" is missing",
            ),
            (
                "{\"kind\":\"eval\",\"step\":-1}\n",
                1,
                "non-negative integer",
            ),
            (
                "{\"kind\":\"eval\",\"step\":1,\"loss\":\"0.5\"}\n",
                1,
                "\"loss\" is \"0.5\"",
            ),
            ("[1,2]\n", 1, "expected a JSON object"),
        ];
        for (text, line, what) in cases {
            let path = write(dir.path(), text);
            let err = read_metrics(&path).unwrap_err().to_string();
            let want = format!("{}:{line}: ", path.display());
            assert!(
                err.starts_with(&want) && err.contains(what),
                "{text:?} -> {err}"
            );
        }
    }

    #[test]
    fn unterminated_last_line_is_still_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let partial = "{\"kind\":\"train\",\"step\":1,\"loss\":0.7}\n{\"kind\":\"tr";
        assert_eq!(read_metrics(&write(dir.path(), partial)).unwrap().len(), 1);
        // The same text once terminated is a real error.
        let err = read_metrics(&write(dir.path(), &format!("{partial}\n"))).unwrap_err();
        assert!(matches!(err, PlotError::Line { line: 2, .. }), "{err}");
    }
}
