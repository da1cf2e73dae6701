//! Remotes: where devices meet — an S3 bucket (and prefix) or a directory — through
//! `object_store`, and the store's list of them (`STORE/REMOTES`).
//!
//! Objects are only ever created, never changed: a device's batches are numbered and put
//! with `PutMode::Create` (a second writer of one number fails instead of overwriting), packs
//! are named by their hash. So a remote never holds a half-written object that something
//! names, and the local directory backend (which has no conditional update) keeps the same
//! guarantees as S3.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// The file of a store that lists its remotes.
pub const REMOTES: &str = "REMOTES";

/// A remote as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// Its name in this store.
    pub name: String,
    /// `s3://BUCKET[/PREFIX]` or `file:///PATH`.
    pub url: String,
    /// S3 endpoint (none: from `AWS_ENDPOINT`, else AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region (none: from `AWS_REGION`/`AWS_DEFAULT_REGION`, else us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Whether an `http://` endpoint is allowed.
    #[serde(default)]
    pub allow_http: bool,
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A bucket and a prefix in it (may be empty).
    S3 { bucket: String, prefix: String },
    /// A directory (absolute).
    Dir(PathBuf),
}

/// Parses a remote URL; the error names it and says what is accepted.
pub fn parse_url(url: &str) -> Result<Location> {
    let bad = |why: &str| anyhow::anyhow!("bad remote URL {url:?}: {why} (s3://BUCKET[/PREFIX] or file:///PATH)");
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
            return Err(bad("the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("the prefix has an empty, '.' or '..' component"));
        }
        return Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad("a file URL needs an absolute path (three slashes: file:///PATH)"));
        }
        if path.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("the path has a '.' or '..' component"));
        }
        return Ok(Location::Dir(PathBuf::from(path)));
    }
    Err(bad("unknown scheme"))
}

/// The remotes a store records (none when it has no `REMOTES`).
pub fn read_remotes(store: &Path) -> Result<Vec<RemoteConfig>> {
    let p = store.join(REMOTES);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is damaged", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the list of remotes (atomically).
pub fn write_remotes(store: &Path, remotes: &[RemoteConfig]) -> Result<()> {
    crate::sync::write_atomic(&store.join(REMOTES), &serde_json::to_vec_pretty(remotes)?)
}

/// The remote named `name`, or the only one when `name` is none.
pub fn find_remote(store: &Path, name: Option<&str>) -> Result<RemoteConfig> {
    let all = read_remotes(store)?;
    match name {
        Some(n) => {
            all.into_iter().find(|r| r.name == n).with_context(|| format!("no remote named {n:?} (cowfs remote list)"))
        }
        None => match &all[..] {
            [one] => Ok(one.clone()),
            [] => bail!("the store has no remote: add one with cowfs remote add NAME URL"),
            _ => bail!("the store has {} remotes: name one", all.len()),
        },
    }
}

/// A remote opened for requests (blocking calls on a small runtime of its own; callable from
/// several threads).
#[derive(Debug)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    requests: std::sync::atomic::AtomicU64,
    /// What to call it in messages.
    pub shown: String,
}

/// How many times a failed request is tried again (`COWFS_SYNC_RETRIES`, default 3), and for
/// how long at most.
fn retry() -> object_store::RetryConfig {
    let max_retries = std::env::var("COWFS_SYNC_RETRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    object_store::RetryConfig { max_retries, retry_timeout: Duration::from_secs(30), ..Default::default() }
}

impl Remote {
    /// The `AWS_*` variables of this process: what S3 remotes take credentials (and defaults)
    /// from. `cowfs sync` sends its own with the request, so a mount's daemon uses the
    /// caller's, not those it was started with.
    pub fn aws_env() -> std::collections::BTreeMap<String, String> {
        std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect()
    }

    /// Opens `cfg`: S3 with the endpoint and region of `cfg` and the `AWS_*` variables `env`
    /// (credentials, and what `cfg` does not say); a directory, which must exist.
    pub fn open(cfg: &RemoteConfig, env: &std::collections::BTreeMap<String, String>) -> Result<Remote> {
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match parse_url(&cfg.url)? {
            Location::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::new();
                for (k, v) in env {
                    if let Ok(key) = k.to_ascii_lowercase().parse() {
                        b = b.with_config(key, v);
                    }
                }
                let mut b = b.with_bucket_name(&bucket).with_allow_http(cfg.allow_http).with_retry(retry());
                if let Some(e) = &cfg.endpoint {
                    if e.starts_with("http://") && !cfg.allow_http {
                        bail!("endpoint {e} is plain http: give --allow-http to use it");
                    }
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                }
                (Arc::new(b.build().with_context(|| format!("remote {}", cfg.url))?), prefix)
            }
            Location::Dir(dir) => {
                if !dir.is_dir() {
                    bail!("remote {}: {} is not a directory", cfg.url, dir.display());
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .with_context(|| format!("remote {}", cfg.url))?;
                (Arc::new(fs), String::new())
            }
        };
        Remote::over(store, prefix, &cfg.url)
    }

    /// A remote on `store` below `prefix` (empty: the whole store), called `shown` in messages.
    pub fn over(store: Arc<dyn ObjectStore>, prefix: String, shown: &str) -> Result<Remote> {
        // Packs upload from several threads at once (see `push_batch`).
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(Remote { store, prefix, rt, requests: 0.into(), shown: shown.to_string() })
    }

    /// Requests made so far (each get, put, listing: one, retries aside).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn key(&self, rel: &str) -> Key {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => Key::from(rel),
            (false, true) => Key::from(self.prefix.as_str()),
            (false, false) => Key::from(format!("{}/{rel}", self.prefix)),
        }
    }

    fn rel<'a>(&self, key: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.prefix).map_or(key, |k| k.trim_start_matches('/'))
        }
    }

    fn fail(&self, what: &str, rel: &str, e: object_store::Error) -> anyhow::Error {
        anyhow::anyhow!("remote {}: {what} {rel}: {}", self.shown, one_line(&e))
    }

    /// Object `rel`, or none.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        self.count();
        let key = self.key(rel);
        self.rt.block_on(async {
            match self.store.get(&key).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.fail("reading", rel, e))?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail("reading", rel, e)),
            }
        })
    }

    /// Creates object `rel`; false when it exists already (nothing is changed then).
    pub fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        self.count();
        let key = self.key(rel);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.rt.block_on(async {
            match self.store.put_opts(&key, PutPayload::from(bytes), opts).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(self.fail("writing", rel, e)),
            }
        })
    }

    /// Writes object `rel` (its name says what it holds: writing it again writes the same).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        self.count();
        let key = self.key(rel);
        self.rt.block_on(async {
            self.store.put(&key, PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| self.fail("writing", rel, e))
        })
    }

    /// The names directly below `rel/` that are "directories" (common prefixes).
    pub fn dirs(&self, rel: &str) -> Result<Vec<String>> {
        self.count();
        let key = self.key(rel);
        self.rt.block_on(async {
            let r = self.store.list_with_delimiter(Some(&key)).await.map_err(|e| self.fail("listing", rel, e))?;
            Ok(r.common_prefixes.iter().filter_map(|p| p.filename().map(String::from)).collect())
        })
    }

    /// Whether nothing is stored below the remote's prefix.
    pub fn is_empty(&self) -> Result<bool> {
        self.count();
        let key = (!self.prefix.is_empty()).then(|| self.key(""));
        self.rt.block_on(async {
            let r = self.store.list_with_delimiter(key.as_ref()).await.map_err(|e| self.fail("listing", "/", e))?;
            Ok(r.objects.is_empty() && r.common_prefixes.is_empty())
        })
    }

    /// The objects below `rel/` whose names sort after `after` (relative to the remote), in
    /// name order.
    pub fn list_after(&self, rel: &str, after: &str) -> Result<Vec<String>> {
        self.count();
        let (key, offset) = (self.key(rel), self.key(after));
        self.rt.block_on(async {
            let metas: Vec<_> = self
                .store
                .list_with_offset(Some(&key), &offset)
                .try_collect()
                .await
                .map_err(|e| self.fail("listing", rel, e))?;
            let mut names: Vec<String> = metas.iter().map(|m| self.rel(m.location.as_ref()).to_string()).collect();
            names.sort();
            Ok(names)
        })
    }
}

/// An object_store error on one line (its sources joined; an S3 error body shortened to its
/// code and message).
fn one_line(e: &object_store::Error) -> String {
    let s = joined(e);
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let from = s.find(&open)? + open.len();
        let to = s[from..].find(&format!("</{t}>"))? + from;
        Some(s[from..to].to_string())
    };
    match (s.find("<?xml"), tag("Code"), tag("Message")) {
        (Some(at), Some(code), Some(msg)) => format!("{}{code}: {msg}", &s[..at]),
        _ => s,
    }
}

fn joined(e: &object_store::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s.replace('\n', " ")
}
