//! What `data.train` and `data.eval` name: one source or a list, each a local file, folder or
//! glob (or a Hub data set, `hf:datasets/OWNER/NAME`), optionally narrowed to a split and
//! sampled to a fraction.
//!
//! Owns: the recipe's value (written as a path, a list of paths, or `{path, split, fraction}`
//! entries, and printed back the same way). Does not: read rows, fetch, or tell which files
//! belong to a split (see `data::sources`).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// One source of records.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// A local file, folder or glob, or `hf:datasets/OWNER/NAME[@REVISION]`.
    pub path: String,
    /// A Hub data set's config: the folder of its files, or of its Parquet conversion (default:
    /// the repo's own data files, else the conversion's `default`).
    pub config: Option<String>,
    /// Only the files of this split (`train`, `test_prefs`, ...): a file whose name, or a folder
    /// on its way, is the split or starts with it followed by `-` or `.`
    /// (`train-00000-of-00002.parquet`, `test.jsonl`, `train/0000.parquet`), the Hugging Face
    /// Hub's naming; `_` belongs to split names (`train_prefs` is not `train`).
    pub split: Option<String>,
    /// A share in (0, 1] of this source's records, drawn with `train.seed`.
    pub fraction: Option<f64>,
}

impl SourceSpec {
    pub fn path(p: impl Into<String>) -> Self {
        Self {
            path: p.into(),
            config: None,
            split: None,
            fraction: None,
        }
    }

    fn is_plain(&self) -> bool {
        self.config.is_none() && self.split.is_none() && self.fraction.is_none()
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(c) = &self.config {
            write!(f, " (config {c})")?;
        }
        if let Some(s) = &self.split {
            write!(f, " (split {s})")?;
        }
        if let Some(x) = self.fraction {
            write!(f, " (fraction {x})")?;
        }
        Ok(())
    }
}

/// `data.train` / `data.eval`: one or more sources, read in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sources(pub Vec<SourceSpec>);

impl Sources {
    pub fn one(path: impl Into<String>) -> Self {
        Sources(vec![SourceSpec::path(path)])
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|s| s.to_string()).collect();
        write!(f, "{}", parts.join(" + "))
    }
}

const ENTRY_FIELDS: &[&str] = &["path", "config", "split", "fraction"];

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = SourceSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a path (a file, folder or glob, or hf:datasets/OWNER/NAME) or {path, split, fraction}",
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<SourceSpec, E> {
        Ok(SourceSpec::path(s))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SourceSpec, A::Error> {
        let (mut path, mut config, mut split, mut fraction) = (None, None, None, None);
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "path" => path = Some(m.next_value::<String>()?),
                "config" => config = Some(m.next_value::<String>()?),
                "split" => split = Some(m.next_value::<String>()?),
                "fraction" => fraction = Some(m.next_value::<f64>()?),
                other => return Err(de::Error::unknown_field(other, ENTRY_FIELDS)),
            }
        }
        Ok(SourceSpec {
            path: path.ok_or_else(|| de::Error::missing_field("path"))?,
            config,
            split,
            fraction,
        })
    }
}

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SpecVisitor)
    }
}

impl Serialize for SourceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_plain() {
            return s.serialize_str(&self.path);
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("path", &self.path)?;
        if let Some(x) = &self.config {
            m.serialize_entry("config", x)?;
        }
        if let Some(x) = &self.split {
            m.serialize_entry("split", x)?;
        }
        if let Some(x) = &self.fraction {
            m.serialize_entry("fraction", x)?;
        }
        m.end()
    }
}

struct SourcesVisitor;

impl<'de> Visitor<'de> for SourcesVisitor {
    type Value = Sources;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a path, a list of paths, or a list of {path, config, split, fraction} entries")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Sources, E> {
        Ok(Sources::one(s))
    }

    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Sources, A::Error> {
        let spec = SourceSpec::deserialize(de::value::MapAccessDeserializer::new(m))?;
        Ok(Sources(vec![spec]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Sources, A::Error> {
        let mut out = Vec::new();
        while let Some(spec) = s.next_element::<SourceSpec>()? {
            out.push(spec);
        }
        if out.is_empty() {
            return Err(de::Error::invalid_length(0, &"at least one source"));
        }
        Ok(Sources(out))
    }
}

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SourcesVisitor)
    }
}

impl Serialize for Sources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] if one.is_plain() => one.serialize(s),
            many => {
                let mut seq = s.serialize_seq(Some(many.len()))?;
                for spec in many {
                    seq.serialize_element(spec)?;
                }
                seq.end()
            }
        }
    }
}
