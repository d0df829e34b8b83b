//! Recipe keys: TRL's names for ours, and where in the YAML text a dotted key is written (for
//! errors that name the line).

/// TRL's (and PEFT's) names for recipe keys, accepted in their section of a recipe and by
/// `--set` either flat (`--set learning_rate=1e-4`) or in their section: `(canonical, alias)`.
/// The resolved recipe is always printed with the canonical names.
pub const TRL_ALIASES: &[(&str, &str)] = &[
    ("train.lr", "learning_rate"),
    ("train.batch_size", "per_device_train_batch_size"),
    ("train.grad_accum", "gradient_accumulation_steps"),
    ("train.epochs", "num_train_epochs"),
    ("train.schedule", "lr_scheduler_type"),
    ("train.warmup_ratio", "warmup_ratio"),
    ("train.warmup_steps", "warmup_steps"),
    ("train.eval_every", "eval_steps"),
    ("train.save_every", "save_steps"),
    ("train.keep_checkpoints", "save_total_limit"),
    ("train.max_grad_norm", "max_grad_norm"),
    ("train.weight_decay", "weight_decay"),
    ("data.truncation", "truncation_mode"),
    ("lora.rank", "lora_r"),
    ("lora.alpha", "lora_alpha"),
    ("lora.dropout", "lora_dropout"),
    ("lora.target_modules", "lora_target_modules"),
];

/// The canonical key for `key` as typed after `--set`: itself, or what a TRL name stands for.
pub(super) fn canonical_key(key: &str) -> String {
    for &(canon, alias) in TRL_ALIASES {
        let (section, _) = canon.split_once('.').unwrap_or(("", canon));
        if key == alias || key == format!("{section}.{alias}") {
            return canon.to_string();
        }
    }
    key.to_string()
}

/// A key given twice in one section, once by its canonical name and once by a TRL name:
/// `Some((section.canonical, section.alias))`.
pub(super) fn alias_clash(tree: &serde_json::Value) -> Option<(String, String)> {
    for &(canon, alias) in TRL_ALIASES {
        let (section, name) = canon.split_once('.')?;
        if name == alias {
            continue;
        }
        let sec = tree.get(section)?.as_object();
        if let Some(sec) = sec {
            if sec.contains_key(name) && sec.contains_key(alias) {
                return Some((canon.to_string(), format!("{section}.{alias}")));
            }
        }
    }
    None
}

/// The dotted key path of the mapping key on 1-based `line` (`train.batch_size`), from indentation.
pub(super) fn key_path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let key_of = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let t = l.trim_start().trim_start_matches("- ");
        if t.starts_with('#') {
            return None;
        }
        let (k, _) = t.split_once(':')?;
        let k = k.trim();
        (!k.is_empty() && !k.contains(' ')).then(|| (indent, k.to_string()))
    };
    let mut i = line.checked_sub(1)?;
    let (mut indent, first) = loop {
        if let Some(k) = lines.get(i).and_then(|l| key_of(l)) {
            break k;
        }
        i = i.checked_sub(1)?;
    };
    let mut path = vec![first];
    while indent > 0 && i > 0 {
        i -= 1;
        if let Some((ind, k)) = lines.get(i).and_then(|l| key_of(l)) {
            if ind < indent {
                path.push(k);
                indent = ind;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// The 1-based line where the dotted `key` is written, if it is.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    (1..=text.lines().count()).find(|&l| {
        key_path_at(text, l).as_deref() == Some(key)
            && text.lines().nth(l - 1).is_some_and(|s| s.contains(':'))
    })
}
