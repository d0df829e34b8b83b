//! Where a model comes from: a local `.gguf` path, or a Hugging Face Hub file fetched with hf-hub
//! into the usual HF cache (`HF_HOME`, `HF_ENDPOINT` and `HF_TOKEN` are honoured).
//!
//! Hub names are written `hf:OWNER/REPO/FILE.gguf` (optionally `@REVISION` after the repo).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub {
        repo: String,
        file: String,
        revision: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}: no such file; pass a local .gguf path, or hf:OWNER/REPO/FILE.gguf to fetch from the Hugging Face Hub (scripts/fetch-models.sh fetches the test models)")]
    Missing(PathBuf),
    #[error("`{0}`: a Hub model is written hf:OWNER/REPO/FILE.gguf (e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf)")]
    BadHubName(String),
    #[error("cannot fetch {repo}/{file} from the Hugging Face Hub ({reason}); download the file on a connected machine and pass its local path with --model, or run scripts/fetch-models.sh for the two test models")]
    Hub {
        repo: String,
        file: String,
        reason: String,
    },
}

impl ModelSource {
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let Some(rest) = s.strip_prefix("hf:") else {
            return Ok(ModelSource::Local(PathBuf::from(s)));
        };
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(SourceError::BadHubName(s.to_string()));
        }
        let (name, revision) = match parts[1].split_once('@') {
            Some((n, r)) if !n.is_empty() && !r.is_empty() => (n, Some(r.to_string())),
            Some(_) => return Err(SourceError::BadHubName(s.to_string())),
            None => (parts[1], None),
        };
        Ok(ModelSource::Hub {
            repo: format!("{}/{}", parts[0], name),
            file: parts[2].to_string(),
            revision,
        })
    }

    /// The local file, downloading it first for a Hub source.
    pub fn resolve(&self) -> Result<PathBuf, SourceError> {
        match self {
            ModelSource::Local(p) if p.is_file() => Ok(p.clone()),
            ModelSource::Local(p) => Err(SourceError::Missing(p.clone())),
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => {
                let hub_err = |reason: String| SourceError::Hub {
                    repo: repo.clone(),
                    file: file.clone(),
                    reason,
                };
                let api = hf_hub::api::sync::ApiBuilder::from_env()
                    .with_progress(true)
                    .build()
                    .map_err(|e| hub_err(first_line(&e.to_string())))?;
                let repo_h = match revision {
                    Some(r) => hf_hub::Repo::with_revision(
                        repo.clone(),
                        hf_hub::RepoType::Model,
                        r.clone(),
                    ),
                    None => hf_hub::Repo::model(repo.clone()),
                };
                api.repo(repo_h)
                    .get(file)
                    .map_err(|e| hub_err(first_line(&e.to_string())))
            }
        }
    }
}

/// The first line of an error text (hf-hub and ureq errors run over several).
pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_hub_names() {
        assert_eq!(
            ModelSource::parse("m.gguf").unwrap(),
            ModelSource::Local("m.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("hf:a/b@v1/x/y.gguf").unwrap(),
            ModelSource::Hub {
                repo: "a/b".into(),
                file: "x/y.gguf".into(),
                revision: Some("v1".into())
            }
        );
        assert!(ModelSource::parse("hf:a/b").is_err());
    }

    #[test]
    fn hub_offline_names_the_local_alternative() {
        // An endpoint on loopback where nothing listens: fails fast, like an offline machine.
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("HF_HOME", dir.path());
        let e = ModelSource::parse("hf:a/b/c.gguf")
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--model") && e.contains("a/b/c.gguf"), "{e}");
    }
}
