//! What the store's syncs know, in `STORE/SYNC` and `STORE/SYNC-UNION`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cowfs_engine::Timestamp;
use serde::{Deserialize, Serialize};

use super::STATE;
use super::clock_of;
use super::model::{Change, Key, Kind, Merged, Vid};

/// Writes `path` atomically: a temporary, fsync, rename, directory fsync.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A local entry as the tree showed it after the last sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Local {
    pub(super) key: Key,
    pub(super) kind: Kind,
    /// Its directory (inode number) and name.
    pub(super) parent: u64,
    pub(super) name: String,
    pub(super) mode: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) target: String,
    /// A file's content and size, and the version that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) vid: Option<Vid>,
}

/// One of this device's batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Batch {
    pub(super) seq: u64,
    pub(super) changes: Vec<Change>,
}

/// What a store knows of one remote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct RemoteState {
    /// This device's batches on it: 1 ..= pushed.
    pub(super) pushed: u64,
    /// Each other device's batches applied: 1 ..= n (by device id in hex).
    pub(super) pulled: BTreeMap<String, u64>,
    /// Where each object (hex id) is: its pack (kept in `SYNC-UNION`).
    #[serde(skip)]
    pub(super) objects: BTreeMap<String, String>,
}

/// The big part of the state, `STORE/SYNC-UNION`, read only when a sync has something to do.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Union {
    pub(super) merged: Merged,
    pub(super) mine: Vec<Batch>,
    /// Per remote: where each object is.
    pub(super) objects: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the store's syncs know: `STORE/SYNC` (what the tree showed, counters, per remote what
/// was pushed and pulled) and `STORE/SYNC-UNION` (the union, this device's batches, the object
/// maps), the second read when needed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) format: u32,
    pub(super) device: u64,
    pub(super) hlc: u64,
    pub(super) next_gid: u64,
    pub(super) next_seq: u64,
    /// This device's batches: 1 ..= batches.
    pub(super) batches: u64,
    pub(super) local: BTreeMap<u64, Local>,
    pub(super) remotes: BTreeMap<String, RemoteState>,
    #[serde(skip)]
    pub(super) merged: Merged,
    #[serde(skip)]
    pub(super) mine: Vec<Batch>,
    /// Whether `merged`, `mine` and the object maps are read (or new).
    #[serde(skip)]
    pub(super) union_read: bool,
    #[serde(skip)]
    pub(super) store: std::path::PathBuf,
    /// The engine's clock when the last scan began (0: never): this device's versions after
    /// it are new to the union.
    #[serde(default)]
    pub(super) scanned: u64,
    /// `SYNC` was of a format before 3: the union's version ids are marked when read.
    #[serde(skip)]
    pub(super) legacy_union: bool,
}

/// The union's file.
pub(super) const UNION: &str = "SYNC-UNION";
/// The format of `SYNC` (and so of `SYNC-UNION`) this build writes: 3, version ids of the
/// engine's (formats 1 and 2, read and saved as 3, held only ids sync made; see
/// [`legacy_vids`]).
const FORMAT: u32 = 3;

/// The `format` field of a JSON object (0 when it has none), read without building the rest.
pub(super) fn format_of(bytes: &[u8]) -> serde_json::Result<u64> {
    #[derive(Deserialize)]
    struct Format {
        #[serde(default)]
        format: u64,
    }
    Ok(serde_json::from_slice::<Format>(bytes)?.format)
}

/// Marks every version id in `v` (an object with exactly the keys `device` and `seq`) as made
/// by sync ([`Vid::SYNC_MADE`]): what the ids of the first formats were, which did not share
/// the engine's numbering. Doing it twice does nothing more.
pub(super) fn legacy_vids(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if m.len() == 2
                && m.contains_key("device")
                && let Some(seq) = m.get_mut("seq")
                && let Some(n) = seq.as_u64()
            {
                *seq = (n | Vid::SYNC_MADE).into();
                return;
            }
            m.values_mut().for_each(legacy_vids);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(legacy_vids),
        _ => {}
    }
}

impl State {
    pub(super) fn load(store: &Path, device: u64) -> Result<State> {
        let p = store.join(STATE);
        let damaged = || format!("{} is damaged", p.display());
        let mut st: State = match std::fs::read(&p) {
            Ok(b) => match format_of(&b).with_context(damaged)? {
                format @ (1 | 2) => {
                    let mut v: serde_json::Value = serde_json::from_slice(&b).with_context(damaged)?;
                    legacy_vids(&mut v);
                    let mut st: State = match format {
                        1 => State::from_format_1(v).with_context(damaged)?,
                        _ => serde_json::from_value(v).with_context(damaged)?,
                    };
                    st.format = FORMAT;
                    st.legacy_union = true;
                    st
                }
                _ => serde_json::from_slice(&b).with_context(damaged)?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let union_read = !store.join(UNION).exists();
                return Ok(State {
                    format: FORMAT,
                    device,
                    union_read,
                    store: store.to_path_buf(),
                    ..State::default()
                });
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        if st.format != FORMAT {
            bail!("{} has format {}, which this cowfs does not know", p.display(), st.format);
        }
        if st.device != device {
            bail!("{} belongs to device {:016x}, not this store's {device:016x}", p.display(), st.device);
        }
        st.store = store.to_path_buf();
        Ok(st)
    }

    /// Format 1 (the first builds of sync): everything in `SYNC`; saved as the current format.
    fn from_format_1(v: serde_json::Value) -> Result<State> {
        #[derive(Deserialize)]
        struct Remote1 {
            pushed: u64,
            pulled: BTreeMap<String, u64>,
            objects: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        struct State1 {
            device: u64,
            hlc: u64,
            next_gid: u64,
            next_seq: u64,
            merged: Merged,
            mine: Vec<Batch>,
            local: BTreeMap<u64, Local>,
            remotes: BTreeMap<String, Remote1>,
        }
        let old: State1 = serde_json::from_value(v)?;
        Ok(State {
            format: FORMAT,
            device: old.device,
            hlc: old.hlc,
            next_gid: old.next_gid,
            next_seq: old.next_seq,
            batches: old.mine.len() as u64,
            local: old.local,
            remotes: old
                .remotes
                .into_iter()
                .map(|(n, r)| (n, RemoteState { pushed: r.pushed, pulled: r.pulled, objects: r.objects }))
                .collect(),
            merged: old.merged,
            mine: old.mine,
            union_read: true,
            ..State::default()
        })
    }

    /// Reads `SYNC-UNION` unless read.
    pub(super) fn read_union(&mut self) -> Result<()> {
        if self.union_read {
            return Ok(());
        }
        let p = self.store.join(UNION);
        let u: Union = match std::fs::read(&p) {
            Ok(b) => {
                let damaged = || format!("{} is damaged", p.display());
                if self.legacy_union {
                    let mut v: serde_json::Value = serde_json::from_slice(&b).with_context(damaged)?;
                    legacy_vids(&mut v);
                    serde_json::from_value(v).with_context(damaged)?
                } else {
                    serde_json::from_slice(&b).with_context(damaged)?
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Union::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        // SYNC-UNION is written first: a save cut short between the two leaves it ahead (a
        // batch recorded whose changes the next scan records again — the same content, which
        // the union shows once); never behind.
        if (u.mine.len() as u64) < self.batches {
            bail!("{} holds {} batches of this device, {} says {}", p.display(), u.mine.len(), STATE, self.batches);
        }
        self.batches = u.mine.len() as u64;
        self.merged = u.merged;
        self.mine = u.mine;
        for (name, objects) in u.objects {
            self.remotes.entry(name).or_default().objects = objects;
        }
        self.union_read = true;
        Ok(())
    }

    /// Writes the state: the union first (when read), so that `SYNC` never counts batches
    /// `SYNC-UNION` lacks.
    pub(super) fn save(&self, store: &Path) -> Result<()> {
        if self.union_read {
            let u = UnionRef {
                merged: &self.merged,
                mine: &self.mine,
                objects: self.remotes.iter().map(|(n, r)| (n.as_str(), &r.objects)).collect(),
            };
            write_atomic(&store.join(UNION), &serde_json::to_vec(&u)?)?;
        }
        write_atomic(&store.join(STATE), &serde_json::to_vec(self)?)
    }

    /// Adds change `c` to the union, and its clock values to those seen.
    pub(super) fn merge(&mut self, c: &Change) {
        let seen = c.place.iter().map(|p| p.stamp.hlc).chain(c.versions.iter().map(|v| v.hlc));
        self.hlc = self.hlc.max(seen.max().unwrap_or(0));
        self.merged.apply(c);
    }

    /// The next clock value: after every one seen, and at least the wall clock.
    pub(super) fn tick(&mut self) -> u64 {
        self.hlc = self.hlc.max(clock_of(Timestamp::now())) + 1;
        self.hlc
    }
}

/// [`Union`] as written, borrowing the state's parts.
#[derive(Serialize)]
pub(super) struct UnionRef<'a> {
    pub(super) merged: &'a Merged,
    pub(super) mine: &'a [Batch],
    pub(super) objects: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

#[cfg(test)]
mod state_tests {
    use super::super::model::Gid;
    use super::*;

    /// A state of the first builds (format 1, one file) is read and saved as format 3 (its
    /// version ids marked as sync's), and a save cut short between its two files (the union
    /// ahead) is read back.
    #[test]
    fn format_1_is_read_and_saved_as_3_and_a_union_ahead_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"format":1,"device":5,"hlc":7,"next_gid":2,"next_seq":3,"merged":[],
            "mine":[{"seq":1,"changes":[]}],"local":{"9":{"key":{"gid":{"device":5,"n":1}},"kind":"file",
            "parent":1,"name":"f","mode":420,"size":0,"vid":{"device":5,"seq":2}}},
            "remotes":{"r":{"pushed":1,"pulled":{"00000000000000aa":4},"objects":{"ab":"pack-1"}}}}"#;
        std::fs::write(dir.path().join(STATE), v1).unwrap();
        let st = State::load(dir.path(), 5).unwrap();
        assert_eq!((st.format, st.batches, st.hlc), (3, 1, 7));
        assert_eq!(st.local[&9].vid, Some(Vid { device: 5, seq: 2 | Vid::SYNC_MADE }));
        st.save(dir.path()).unwrap();
        let mut again = State::load(dir.path(), 5).unwrap();
        assert!(!again.union_read);
        assert_eq!(again.local[&9].vid, Some(Vid { device: 5, seq: 2 | Vid::SYNC_MADE }));
        again.read_union().unwrap();
        assert_eq!(again.remotes["r"].objects["ab"], "pack-1");
        assert_eq!(again.remotes["r"].pulled["00000000000000aa"], 4);
        assert_eq!(again.mine.len(), 1);
        // The union written, SYNC not: SYNC counts one batch less.
        again.mine.push(Batch { seq: 2, changes: Vec::new() });
        again.batches = 2;
        let union = UnionRef {
            merged: &again.merged,
            mine: &again.mine,
            objects: again.remotes.iter().map(|(n, r)| (n.as_str(), &r.objects)).collect(),
        };
        write_atomic(&dir.path().join(UNION), &serde_json::to_vec(&union).unwrap()).unwrap();
        let mut cut = State::load(dir.path(), 5).unwrap();
        assert_eq!(cut.batches, 1);
        cut.read_union().unwrap();
        assert_eq!(cut.batches, 2);
        assert!(State::load(dir.path(), 6).is_err(), "another device's state is refused");
    }

    /// A format 2 state (two files) is read as format 3: the version ids of both files are
    /// marked as sync's, once, however often it is read before it is saved.
    #[test]
    fn format_2_version_ids_are_marked_as_made_by_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = r#"{"format":2,"device":5,"hlc":7,"next_gid":2,"next_seq":3,"batches":1,"local":{},"remotes":{}}"#;
        let union = r#"{"merged":[[{"device":5,"n":1},{"kind":"file","place":null,"versions":[
            {"vid":{"device":5,"seq":1},"parents":[],"hlc":1,"time":[0,0],"size":0},
            {"vid":{"device":8,"seq":1},"parents":[{"device":5,"seq":1}],"hlc":2,"time":[0,0],"size":0}]}]],
            "mine":[{"seq":1,"changes":[]}],"objects":{}}"#;
        std::fs::write(dir.path().join(STATE), sync).unwrap();
        std::fs::write(dir.path().join(UNION), union).unwrap();
        for _ in 0..2 {
            let mut st = State::load(dir.path(), 5).unwrap();
            assert_eq!(st.format, 3);
            st.read_union().unwrap();
            let e = &st.merged.entries[&Gid { device: 5, n: 1 }];
            let ids: Vec<Vid> = e.versions.keys().copied().collect();
            let marked = |device, seq: u64| Vid { device, seq: seq | Vid::SYNC_MADE };
            assert_eq!(ids, [marked(5, 1), marked(8, 1)]);
            assert_eq!(e.versions[&marked(8, 1)].parents, [marked(5, 1)]);
            // Saved as 3, the union marked: read again, nothing is marked twice (a no-op).
            st.save(dir.path()).unwrap();
        }
    }
}
