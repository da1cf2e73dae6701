//! The read path: a file's bytes from its content tree, verified, through the chunk and node
//! caches. Reads take the index lock only to look objects up; segment files are read
//! without it (compaction may move an object meanwhile: a read that fails retries at the
//! object's new place).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{CorruptKind, Error, Result};
use crate::format::chunk;
use crate::format::record::FileKind;
use crate::format::tree::{self, ExtentKind, Node};
use crate::ids::{ChunkId, InodeId, LowerFileId, NodeId};
use crate::index::Location;
use crate::log::store;
use crate::state::Shared;
use crate::sync::Mutex;

mod cache;

use cache::Cache;

/// A range of a chunk that a read copies to file offset `at`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    chunk: ChunkId,
    from: u32,
    len: usize,
    at: u64,
}

/// A range of a lower file that a read copies to file offset `at`.
#[derive(Debug, Clone, Copy)]
struct LowerPiece {
    file: LowerFileId,
    from: u64,
    len: usize,
    at: u64,
}

/// Zeroes the bytes of `out` (file bytes from `base`) that no piece covers. Pieces come in
/// file order without overlaps; should they not, all of `out` is zeroed.
fn zero_holes(pieces: &[Piece], base: u64, out: &mut [u8]) {
    let mut pos = 0;
    for p in pieces {
        let at = (p.at - base) as usize;
        if at < pos {
            out.fill(0);
            return;
        }
        out[pos..at].fill(0);
        pos = at + p.len;
    }
    out[pos..].fill(0);
}

/// The most one read of neighbouring frames covers.
const SPAN_MAX: u64 = 8 << 20;
/// The largest read buffer a thread keeps for its next read.
const SPAN_BUF_KEEP: usize = 4 << 20;

thread_local! {
    static SPAN_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Times a read that failed is tried again on a file's newer version (see [`Reader::read_into`]).
const READ_RETRIES: usize = 8;
/// The largest gap between frames that one read still spans (reading it costs less than
/// another read).
const SPAN_GAP: u64 = 64 << 10;

/// Reads through the caches (one per open engine).
#[derive(Debug)]
pub(crate) struct Reader {
    shared: Arc<Shared>,
    chunks: Mutex<Cache<Arc<Vec<u8>>>>,
    nodes: Mutex<Cache<Arc<Node>>>,
}

impl Reader {
    /// A reader whose chunk cache holds up to `chunk_cache_bytes`.
    pub(crate) fn new(shared: Arc<Shared>, chunk_cache_bytes: usize) -> Reader {
        Reader { shared, chunks: Mutex::new(Cache::new(chunk_cache_bytes)), nodes: Mutex::new(Cache::new(8 << 20)) }
    }

    /// Reads from a content tree of a file of `size` bytes: any version's content.
    pub fn read_content(&self, root: Option<NodeId>, size: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_content_into(root, size, offset, len, &mut out)?;
        Ok(out)
    }

    /// `Engine::read` into `out` (replacing what it held; its capacity is reused).
    ///
    /// A read that fails while the file got a new version is read again from the new one: the
    /// version it started from may have been pruned and its objects collected by a compaction
    /// meanwhile (a reader holds no lock between the file's tree and its chunks), and the
    /// newest content is what a read racing a save may return anyway.
    pub fn read_into(&self, ino: InodeId, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let mut i = self.shared.inode(ino)?;
        if i.kind != FileKind::Regular {
            return Err(Error::IsDir(ino));
        }
        let mut retries = 0;
        loop {
            let Err(e) = self.read_content_into(i.content, i.size, offset, len, out) else { return Ok(()) };
            let now = self.shared.inode(ino)?;
            if now.content == i.content || retries == READ_RETRIES {
                return Err(e);
            }
            (i, retries) = (now, retries + 1);
        }
    }

    /// `Engine::read_content` into `out` (replacing what it held; its capacity is reused).
    pub fn read_content_into(
        &self,
        root: Option<NodeId>,
        size: u64,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let end = size.min(offset.saturating_add(len as u64));
        if offset >= end {
            out.clear();
            return Ok(());
        }
        // The old bytes stay where chunks overwrite them (zeroing a megabyte per read was
        // ~3% of a cold read's time); holes are zeroed.
        out.truncate((end - offset) as usize);
        out.resize((end - offset) as usize, 0);
        let (mut pieces, mut lower) = (Vec::new(), Vec::new());
        if let Some(root) = root {
            self.pieces(root, 0, offset, end, (&mut pieces, Some(&mut lower)), 0)?;
        }
        // Lower ranges are zeroed too, then read over.
        zero_holes(&pieces, offset, out);
        self.copy_chunks(&pieces, offset, out)?;
        for p in lower {
            let at = (p.at - offset) as usize;
            self.lower(p.file, p.from, &mut out[at..at + p.len])?;
        }
        Ok(())
    }

    /// Fills `buf` from recorded lower file `file` at `offset` (see
    /// [`crate::storage::lower::Lowers::read_at`]), or from its absorbed tree.
    pub fn lower(&self, file: LowerFileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self.shared.index.read().lower_files().get(&file).cloned();
        let f = f.ok_or_else(|| Error::corrupt("index", 0, CorruptKind::Missing(format!("lower file {file}"))))?;
        match self.absorbed(file) {
            None => self.shared.lowers.read_at(&f, offset, buf),
            Some(root) => {
                let mut pieces = Vec::new();
                self.absorbed_pieces(file, root, offset, buf.len() as u64, 0, &mut pieces)?;
                self.copy_chunks(&pieces, 0, buf)
            }
        }
    }

    /// Lists the chunk ranges of `from .. from + len` of absorbed lower file `file` (its tree
    /// `root`), moved to file offset `at`. Every byte must be there: a range nothing referred
    /// to when the file was absorbed is a hole in its tree, and reading it is damage, not
    /// zeros.
    fn absorbed_pieces(
        &self,
        file: LowerFileId,
        root: NodeId,
        from: u64,
        len: u64,
        at: u64,
        out: &mut Vec<Piece>,
    ) -> Result<()> {
        let first = out.len();
        self.pieces(root, 0, from, from + len, (&mut *out, None), 0)?;
        let covered: u64 = out[first..].iter().map(|p| p.len as u64).sum();
        if covered != len {
            let what = format!("bytes {from}..{} of absorbed lower file {file}", from + len);
            return Err(Error::corrupt("index", 0, CorruptKind::Missing(what)));
        }
        out[first..].iter_mut().for_each(|p| p.at = p.at - from + at);
        Ok(())
    }

    /// The content tree of lower file `file`'s bytes, once absorbed.
    fn absorbed(&self, file: LowerFileId) -> Option<NodeId> {
        self.shared.index.read().absorbed().get(&file).copied()
    }

    /// Lists the chunk ranges and the lower ranges of the subtree `id` (which starts at file
    /// offset `base`) that fall in `offset .. end`. A range of an absorbed lower file is listed
    /// as the chunk ranges of its absorbed tree. `lower` is `None` inside an absorbed tree,
    /// which holds no lower ranges.
    fn pieces(
        &self,
        id: NodeId,
        base: u64,
        offset: u64,
        end: u64,
        out: (&mut Vec<Piece>, Option<&mut Vec<LowerPiece>>),
        depth: u8,
    ) -> Result<()> {
        let (out, mut lower) = out;
        if depth > tree::MAX_LEVEL {
            return Err(self.tree_corrupt(id, "tree deeper than the limit"));
        }
        let node = self.node(id)?;
        let mut pos = base;
        match node.as_ref() {
            Node::Leaf(extents) => {
                for e in extents {
                    let e_end = pos.saturating_add(e.len);
                    let (s, t) = (pos.max(offset), e_end.min(end));
                    match e.kind {
                        ExtentKind::Chunk { id: chunk, offset: coff } if s < t => {
                            let from = u32::try_from(coff as u64 + (s - pos))
                                .map_err(|_| self.tree_corrupt(id, "extent beyond its chunk"))?;
                            out.push(Piece { chunk, from, len: (t - s) as usize, at: s });
                        }
                        ExtentKind::Lower { file, offset: loff } if s < t => {
                            let from = loff + (s - pos);
                            let Some(lower) = lower.as_deref_mut() else {
                                return Err(self.tree_corrupt(id, "an absorbed tree refers to a lower file"));
                            };
                            match self.absorbed(file) {
                                None => lower.push(LowerPiece { file, from, len: (t - s) as usize, at: s }),
                                Some(root) => self.absorbed_pieces(file, root, from, t - s, s, out)?,
                            }
                        }
                        _ => {}
                    }
                    pos = e_end;
                    if pos >= end {
                        break;
                    }
                }
            }
            Node::Inner { children, .. } => {
                for c in children {
                    let c_end = pos.saturating_add(c.len);
                    if pos.max(offset) < c_end.min(end) {
                        self.pieces(c.id, pos, offset, end, (&mut *out, lower.as_deref_mut()), depth + 1)?;
                    }
                    pos = c_end;
                    if pos >= end {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies each piece's bytes of its chunk into `out` (which starts at file offset
    /// `base`). Chunks not in the cache are read with one read per run of neighbouring frames
    /// in a segment (a sequential read of a file written sequentially is one read), each
    /// frame verified as [`Reader::chunk`] does; a run that fails to read or verify (say,
    /// compaction moved it meanwhile) goes through [`Reader::chunk`] one by one, which retries
    /// moved objects and reports damage.
    fn copy_chunks(&self, pieces: &[Piece], base: u64, out: &mut [u8]) -> Result<()> {
        let copy = |p: &Piece, data: &[u8], out: &mut [u8]| -> Result<()> {
            let src =
                data.get(p.from as usize..p.from as usize + p.len).ok_or_else(|| Error::extent_beyond(p.chunk))?;
            let at = (p.at - base) as usize;
            out[at..at + p.len].copy_from_slice(src);
            Ok(())
        };
        let mut missing = Vec::new();
        {
            let cache = self.chunks.lock();
            for p in pieces {
                match cache.get(&p.chunk.0) {
                    Some(c) => copy(p, &c, out)?,
                    None => missing.push(p),
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut slow = Vec::new();
        let mut located = Vec::with_capacity(missing.len());
        {
            let ix = self.shared.index.read();
            for p in missing {
                match ix.objects().get(&p.chunk.0) {
                    Some(e) if !e.is_node && store::check_frame_len(e.loc).is_ok() => located.push((e.loc, p)),
                    _ => slow.push(p),
                }
            }
        }
        located.sort_by_key(|(l, _)| (l.segment, l.offset));
        // The thread's read buffer: fresh megabytes for every read cost a page fault and a
        // zeroed page per 4 KiB.
        let mut buf = SPAN_BUF.take();
        let mut rest = &located[..];
        while let Some(((first, _), _)) = rest.split_first() {
            // A run: frames of one segment, each starting at most SPAN_GAP after the run's
            // reach, the whole at most SPAN_MAX.
            let (start, mut stop, mut n) = (first.offset, first.offset + first.len as u64, 1);
            while let Some((l, _)) = rest.get(n)
                && l.segment == first.segment
                && l.offset <= stop + SPAN_GAP
                && (l.offset + l.len as u64).max(stop) - start <= SPAN_MAX
            {
                stop = stop.max(l.offset + l.len as u64);
                n += 1;
            }
            let (run, tail) = rest.split_at(n);
            rest = tail;
            let len = (stop - start) as usize;
            if self.shared.segments.read_span_into(first.segment, start, len, &mut buf).is_err() {
                slow.extend(run.iter().map(|(_, p)| *p));
                continue;
            }
            let span = &buf[..len];
            let mut last: Option<(Location, std::borrow::Cow<'_, [u8]>)> = None;
            for (loc, p) in run {
                if last.as_ref().is_none_or(|(l, _)| l != loc) {
                    let at = (loc.offset - start) as usize;
                    let raw = store::frame_payload(&span[at..at + loc.len as usize], *loc, false)
                        .ok()
                        .and_then(|payload| chunk::decode_chunk_ref(payload, p.chunk).ok());
                    last = raw.map(|r| (*loc, r));
                }
                match &last {
                    Some((_, raw)) => {
                        copy(p, raw, out)?;
                        // A chunk only partly read now is likely read again for the rest.
                        if p.len < raw.len() {
                            self.chunks.lock().insert(p.chunk.0, Arc::new(raw.to_vec()), raw.len());
                        }
                    }
                    None => slow.push(p),
                }
            }
        }
        if buf.capacity() <= SPAN_BUF_KEEP {
            SPAN_BUF.set(buf);
        }
        for p in slow {
            copy(p, &self.chunk(p.chunk)?, out)?;
        }
        Ok(())
    }

    fn tree_corrupt(&self, id: NodeId, what: &'static str) -> Error {
        let loc = self.shared.index.read().objects().get(&id.0).map(|e| e.loc);
        let (file, off) = loc.map_or((String::from("?"), 0), |l| (l.segment.file_name(), l.offset));
        Error::corrupt(file, off, CorruptKind::Malformed(what))
    }

    /// Calls `f(offset, extent)` for every extent of a content tree, in order.
    pub fn for_each_extent(&self, root: Option<NodeId>, mut f: impl FnMut(u64, tree::Extent)) -> Result<()> {
        fn walk(e: &Reader, id: NodeId, pos: &mut u64, f: &mut dyn FnMut(u64, tree::Extent), depth: u8) -> Result<()> {
            if depth > tree::MAX_LEVEL {
                return Err(e.tree_corrupt(id, "tree deeper than the limit"));
            }
            match e.node(id)?.as_ref() {
                Node::Leaf(ext) => {
                    for x in ext {
                        f(*pos, *x);
                        *pos = pos.saturating_add(x.len);
                    }
                }
                Node::Inner { children, .. } => {
                    for c in children {
                        let start = *pos;
                        walk(e, c.id, pos, f, depth + 1)?;
                        if *pos - start != c.len {
                            return Err(e.tree_corrupt(id, "child length differs from its subtree"));
                        }
                    }
                }
            }
            Ok(())
        }
        let mut pos = 0;
        match root {
            Some(r) => walk(self, r, &mut pos, &mut f, 0),
            None => Ok(()),
        }
    }

    /// The data bytes of a content tree, holes excluded: (bytes in chunks, bytes in lower
    /// files). `memo` holds the sums of nodes already walked: trees share nodes, so a walk of
    /// many versions reads each distinct node once.
    pub fn data_bytes(&self, root: Option<NodeId>, memo: &mut HashMap<NodeId, (u64, u64)>) -> Result<(u64, u64)> {
        fn walk(e: &Reader, id: NodeId, memo: &mut HashMap<NodeId, (u64, u64)>, depth: u8) -> Result<(u64, u64)> {
            if let Some(sums) = memo.get(&id) {
                return Ok(*sums);
            }
            if depth > tree::MAX_LEVEL {
                return Err(e.tree_corrupt(id, "tree deeper than the limit"));
            }
            let (mut chunks, mut lower) = (0u64, 0u64);
            match e.node(id)?.as_ref() {
                Node::Leaf(ext) => {
                    for x in ext {
                        match x.kind {
                            ExtentKind::Chunk { .. } => chunks = chunks.saturating_add(x.len),
                            ExtentKind::Lower { .. } => lower = lower.saturating_add(x.len),
                            ExtentKind::Hole => {}
                        }
                    }
                }
                Node::Inner { children, .. } => {
                    for c in children {
                        let (c, l) = walk(e, c.id, memo, depth + 1)?;
                        (chunks, lower) = (chunks.saturating_add(c), lower.saturating_add(l));
                    }
                }
            }
            memo.insert(id, (chunks, lower));
            Ok((chunks, lower))
        }
        root.map_or(Ok((0, 0)), |r| walk(self, r, memo, 0))
    }

    /// The verified frame payload of a stored object, and where it is.
    /// Compaction may move the object meanwhile: a read that fails is retried at the object's
    /// new place.
    fn object_payload(&self, id: &[u8; 32], node: bool) -> Result<(Vec<u8>, Location)> {
        let locate = || match self.shared.index.read().objects().get(id) {
            Some(e) if e.is_node == node => Ok(e.loc),
            _ => {
                let what = if node { "node" } else { "chunk" };
                let kind = CorruptKind::Missing(format!("{what} {}", NodeId(*id)));
                Err(Error::corrupt("index", 0, kind))
            }
        };
        let mut loc = locate()?;
        loop {
            match self.shared.segments.read_frame(loc) {
                Ok(p) => return Ok((p, loc)),
                Err(e) => match locate() {
                    Ok(moved) if moved != loc => loc = moved,
                    _ => return Err(e),
                },
            }
        }
    }

    /// A node, verified (frame checksum and keyed hash) and cached.
    pub fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        if let Some(n) = self.nodes.lock().get(&id.0) {
            return Ok(n);
        }
        let (payload, loc) = self.object_payload(&id.0, true)?;
        let name = loc.segment.file_name();
        if tree::node_id(&payload) != id {
            return Err(Error::HashMismatch { object: id.to_string(), file: name, offset: loc.offset });
        }
        let node = Arc::new(Node::decode(&payload).map_err(|e| e.at(&name, loc.offset))?);
        self.nodes.lock().insert(id.0, node.clone(), payload.len());
        Ok(node)
    }

    /// A chunk's raw bytes, verified (frame checksum, decompression cap, blake3) and cached.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.chunks.lock().get(&id.0) {
            return Ok(c);
        }
        let (payload, loc) = self.object_payload(&id.0, false)?;
        let name = loc.segment.file_name();
        let raw = chunk::decode_chunk(&payload, id).map_err(|e| match e.0 {
            CorruptKind::HashMismatch(_) => {
                Error::HashMismatch { object: id.to_string(), file: name.clone(), offset: loc.offset }
            }
            k => Error::corrupt(&name, loc.offset, k),
        })?;
        let raw = Arc::new(raw);
        self.chunks.lock().insert(id.0, raw.clone(), raw.len());
        Ok(raw)
    }
}
