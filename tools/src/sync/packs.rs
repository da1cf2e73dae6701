//! Packs: the content a batch needs, uploaded; and fetched back for an apply.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use cowfs_engine::{ChunkId, Engine, NodeId, Received};

use super::remote::Remote;
use super::state::{Batch, RemoteState};
use super::{BATCH_FORMAT, PACK_BYTES, PackRef, RemoteBatch, UPLOADS, batch_key, hex, read_batch, unhex};

/// Uploads batch `b` of this device: packs of the content it needs that the remote lacks,
/// then the batch. Returns the bytes of its packs. A batch already there (a sync cut short
/// after writing it) is accepted when it is the same.
pub(super) fn push_batch(e: &Engine, remote: &Remote, rs: &mut RemoteState, device: u64, b: &Batch) -> Result<u64> {
    let dev = format!("{device:016x}");
    // Packs are uploaded by UPLOADS threads while the next ones are built.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(1);
    let rx = std::sync::Mutex::new(rx);
    let (packs, bytes) = std::thread::scope(|scope| -> Result<(Vec<PackRef>, u64)> {
        let uploaders: Vec<_> = (0..UPLOADS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((key, pack)) = next else { return Ok(()) };
                        remote.put(&key, pack)?;
                    }
                })
            })
            .collect();
        let built = build_packs(e, rs, &dev, b, &tx);
        drop(tx);
        for u in uploaders {
            // An upload failure explains a build stopped by the closed channel: it goes first.
            u.join().unwrap_or_else(|_| bail!("an upload thread panicked"))?;
        }
        built
    })?;
    for p in &packs {
        for id in &p.ids {
            rs.objects.insert(id.clone(), p.key.clone());
        }
    }
    let batch = RemoteBatch { format: BATCH_FORMAT, device, seq: b.seq, packs, changes: b.changes.clone() };
    let key = batch_key(&dev, b.seq);
    if !remote.create(&key, serde_json::to_vec(&batch)?)? {
        let there = read_batch(remote, &key)?;
        if there.changes != batch.changes {
            bail!(
                "remote {}: {key} exists and differs: another store with this device id ({dev}) syncs there",
                remote.shown
            );
        }
        for p in &there.packs {
            for id in &p.ids {
                rs.objects.insert(id.clone(), p.key.clone());
            }
        }
    }
    Ok(bytes)
}

/// Builds the packs of the objects batch `b`'s versions need that the remote lacks, handing
/// each to `upload` as it is complete. Returns them and their objects' bytes.
pub(super) fn build_packs(
    e: &Engine,
    rs: &RemoteState,
    dev: &str,
    b: &Batch,
    upload: &std::sync::mpsc::SyncSender<(String, Vec<u8>)>,
) -> Result<(Vec<PackRef>, u64)> {
    let mut packs = Vec::new();
    let mut pack: Vec<u8> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    let mut queued: HashSet<[u8; 32]> = HashSet::new();
    let flush = |pack: &mut Vec<u8>, ids: &mut Vec<String>, packs: &mut Vec<PackRef>| -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = format!("devices/{dev}/pack-{}.pack", blake3::hash(pack).to_hex());
        upload.send((key.clone(), std::mem::take(pack))).map_err(|_| anyhow::anyhow!("the upload stopped"))?;
        packs.push(PackRef { key, ids: std::mem::take(ids) });
        Ok(())
    };
    for v in b.changes.iter().flat_map(|c| c.versions.iter()) {
        let Some(root) = &v.content else { continue };
        let (nodes, chunks) = e.tree_objects(NodeId(unhex(root)?))?;
        let objects = nodes.iter().map(|n| (1u8, n.0)).chain(chunks.iter().map(|c| (2u8, c.0)));
        for (kind, id) in objects {
            let h = hex(&id);
            if rs.objects.contains_key(&h) || !queued.insert(id) {
                continue;
            }
            let data = if kind == 1 { e.node_bytes(NodeId(id))? } else { e.chunk(ChunkId(id))?.to_vec() };
            pack.push(kind);
            pack.extend_from_slice(&id);
            pack.extend_from_slice(&(data.len() as u32).to_le_bytes());
            pack.extend_from_slice(&data);
            bytes += data.len() as u64;
            ids.push(h);
            if pack.len() >= PACK_BYTES {
                flush(&mut pack, &mut ids, &mut packs)?;
            }
        }
    }
    flush(&mut pack, &mut ids, &mut packs)?;
    Ok((packs, bytes))
}

/// A pack's objects by id: kind (1 node, 2 chunk) and bytes.
pub(super) type PackObjects = HashMap<[u8; 32], (u8, Vec<u8>)>;

/// Packs fetched during one apply.
pub(super) struct Packs<'a> {
    pub(super) remote: &'a Remote,
    pub(super) rs: &'a RemoteState,
    pub(super) cache: HashMap<String, PackObjects>,
    pub(super) bytes: u64,
}

impl Packs<'_> {
    /// Object `id` (kind 1 node, 2 chunk) from the remote.
    pub(super) fn get(&mut self, id: &[u8; 32]) -> Result<(u8, Vec<u8>)> {
        let h = hex(id);
        let key = self
            .rs
            .objects
            .get(&h)
            .with_context(|| format!("remote {}: no pack holds object {h}", self.remote.shown))?;
        if !self.cache.contains_key(key) {
            if self.cache.len() >= 4 {
                self.cache.clear();
            }
            let bytes =
                self.remote.get(key)?.with_context(|| format!("remote {}: {key} is gone", self.remote.shown))?;
            self.bytes += bytes.len() as u64;
            self.cache.insert(
                key.clone(),
                parse_pack(&bytes).with_context(|| format!("remote {}: {key}", self.remote.shown))?,
            );
        }
        self.cache[key]
            .get(id)
            .cloned()
            .with_context(|| format!("remote {}: {key} lacks object {h}", self.remote.shown))
    }

    /// What the store lacks of the trees `roots`.
    pub(super) fn trees(&mut self, e: &Engine, roots: &[NodeId]) -> Result<Received> {
        let mut r = Received::default();
        let mut todo = roots.to_vec();
        let mut seen = HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) || e.has_object(&id.0) {
                continue;
            }
            let (kind, bytes) = self.get(&id.0)?;
            if kind != 1 {
                bail!("remote {}: object {id} is not a node", self.remote.shown);
            }
            for (k, child) in node_refs(&bytes)? {
                if k == 1 {
                    todo.push(NodeId(child));
                } else if !e.has_object(&child) && seen.insert(NodeId(child)) {
                    let (ck, raw) = self.get(&child)?;
                    if ck != 2 {
                        bail!("remote {}: object {} is not a chunk", self.remote.shown, hex(&child));
                    }
                    r.chunks.push((ChunkId(child), raw));
                }
            }
            r.nodes.push((id, bytes));
        }
        Ok(r)
    }
}

/// The ids a node refers to: (1, child node) or (2, chunk).
pub(super) fn node_refs(bytes: &[u8]) -> Result<Vec<(u8, [u8; 32])>> {
    let refs = cowfs_engine::tree_refs(bytes).map_err(|e| anyhow::anyhow!("a received node does not decode: {e}"))?;
    Ok(refs.into_iter().map(|r| (if r.node { 1 } else { 2 }, r.id)).collect())
}

pub(super) fn parse_pack(bytes: &[u8]) -> Result<PackObjects> {
    let mut out = HashMap::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes.len() - at < 37 {
            bail!("truncated at byte {at}");
        }
        let kind = bytes[at];
        let id: [u8; 32] = bytes[at + 1..at + 33].try_into().expect("32 bytes");
        let len = u32::from_le_bytes(bytes[at + 33..at + 37].try_into().expect("4 bytes")) as usize;
        at += 37;
        if bytes.len() - at < len || !(kind == 1 || kind == 2) {
            bail!("damaged at byte {at}");
        }
        out.insert(id, (kind, bytes[at..at + len].to_vec()));
        at += len;
    }
    Ok(out)
}
