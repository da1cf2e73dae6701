//! `cowfs-bench sync`: sync against a SeaweedFS S3 server it starts on loopback
//! (`target/weed/bin/weed`, or `COWFS_WEED`): a push of `--mib` MiB of new data against
//! object_store's own multipart put of the same bytes to the same server; a sync with nothing
//! to do on a store of `--files` files (time and requests); the pull and apply of 1,000 small
//! edits made on another device; a clone of the `--mib` MiB store. Engine-level (no mount).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cowfs_benches::fill;
use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, InodeId, Options};
use cowfs_tools::sync::remote::RemoteConfig;
use cowfs_tools::sync::{self, Direction, Report};

const KEY: (&str, &str) = ("cowfs-bench", "cowfs-bench-secret");

/// A SeaweedFS server, killed when dropped.
struct Weed(std::process::Child, u16);

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn weed(dir: &Path) -> Result<Weed> {
    let bin = match std::env::var_os("COWFS_WEED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/weed/bin/weed"),
    };
    if !bin.is_file() {
        bail!("{} is missing (scripts/test installs SeaweedFS; or set COWFS_WEED)", bin.display());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(dir.join("weed.log"))?;
    let child = std::process::Command::new(bin)
        .arg("mini")
        .arg(format!("-dir={}", dir.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false", "-webdav=false"])
        .arg(format!("-s3.port={port}"))
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=bench"])
        .env("AWS_ACCESS_KEY_ID", KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", KEY.1)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting weed")?;
    Ok(Weed(child, port))
}

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), KEY.0.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), KEY.1.to_string()),
    ])
}

fn remote(port: u16, prefix: &str) -> RemoteConfig {
    RemoteConfig {
        name: "bench".into(),
        url: format!("s3://bench/{prefix}"),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: None,
        allow_http: true,
    }
}

fn store(dir: &Path, name: &str) -> Result<(Engine, PathBuf)> {
    let p = dir.join(name);
    std::fs::create_dir_all(&p)?;
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(&p)?);
    Ok((Engine::open(st, Options::default())?, p))
}

fn put(e: &Engine, dir: InodeId, name: &str, data: &[u8]) -> Result<()> {
    let ino = match e.lookup(dir, name.as_bytes()) {
        Ok(i) => i.ino,
        Err(_) => e.create_file(dir, name.as_bytes(), 0o644)?.ino,
    };
    let mut w = e.open_file(ino)?;
    w.truncate(0)?;
    w.write(0, data)?;
    w.commit(false)?;
    Ok(())
}

fn sync_once(e: &Engine, p: &Path, cfg: &RemoteConfig) -> Result<(Report, f64)> {
    let t = Instant::now();
    let (r, _) = sync::run(e, p, cfg, &env(), Direction::Both, false, &mut |_, _| {})?;
    Ok((r, t.elapsed().as_secs_f64()))
}

/// Runs the measurements with `mib` MiB and `files` files under `base`.
pub fn sync_bench(base: &Path, mib: u64, files: u64) -> Result<()> {
    let t = tempfile::tempdir_in(base)?;
    let server = weed(t.path())?;
    // Ready: the bucket answers (it is made a moment after the port opens).
    let probe = store(t.path(), "probe")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sync::run(&probe.0, &probe.1, &remote(server.1, "probe"), &env(), Direction::Both, true, &mut |_, _| {})
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("SeaweedFS did not get ready in 60 s (see {}/weed.log)", t.path().display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // 1. Push of `mib` MiB of new data, against object_store's multipart put of the same bytes.
    let (a, pa) = store(t.path(), "a")?;
    let mut data = vec![0u8; (mib << 20) as usize];
    for (i, piece) in data.chunks_mut(1 << 20).enumerate() {
        fill(piece, 77 + i as u64, false);
    }
    put(&a, InodeId::ROOT, "big", &data)?;
    a.sync()?;
    let cfg = remote(server.1, "big");
    let (r, push_secs) = sync_once(&a, &pa, &cfg)?;
    let raw_secs = {
        use object_store::{ObjectStoreExt, WriteMultipart};
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("bench")
            .with_endpoint(format!("http://127.0.0.1:{}", server.1))
            .with_allow_http(true)
            .with_access_key_id(KEY.0)
            .with_secret_access_key(KEY.1)
            .with_region("us-east-1")
            .build()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let t0 = Instant::now();
        rt.block_on(async {
            let up = s3.put_multipart(&object_store::path::Path::from("raw/big")).await?;
            let mut w = WriteMultipart::new_with_chunk_size(up, 16 << 20);
            for piece in data.chunks(16 << 20) {
                w.wait_for_capacity(4).await?;
                w.put(bytes::Bytes::copy_from_slice(piece));
            }
            w.finish().await?;
            Ok::<(), object_store::Error>(())
        })?;
        t0.elapsed().as_secs_f64()
    };
    let mibf = mib as f64;
    println!(
        "sync push of {mib} MiB new data: {:.2} s = {:.0} MiB/s ({} requests, {:.1} MiB of packs); object_store multipart put of the same bytes: {:.2} s = {:.0} MiB/s; ratio {:.2}",
        push_secs,
        mibf / push_secs,
        r.requests,
        r.bytes_pushed as f64 / (1 << 20) as f64,
        raw_secs,
        mibf / raw_secs,
        raw_secs / push_secs
    );

    // 2. Clone of that store.
    let (c, pc) = store(t.path(), "clone")?;
    let (r, clone_secs) = sync_once(&c, &pc, &cfg)?;
    let same = c.read(c.lookup(InodeId::ROOT, b"big")?.ino, 0, data.len())? == data;
    println!(
        "clone of {mib} MiB: {:.2} s = {:.0} MiB/s ({} requests){}",
        clone_secs,
        mibf / clone_secs,
        r.requests,
        if same { "" } else { " — CONTENT DIFFERS" }
    );
    drop(data);

    // 3. A sync with nothing to do, on a store of `files` files.
    let (f, pf) = store(t.path(), "files")?;
    let per_dir = 1000;
    let mut buf = vec![0u8; 2000];
    for d in 0..files.div_ceil(per_dir) {
        let dir = f.mkdir(InodeId::ROOT, format!("d{d}").as_bytes(), 0o755, 0, 0)?.ino;
        for i in 0..per_dir.min(files - d * per_dir) {
            fill(&mut buf, d * per_dir + i, true);
            put(&f, dir, &format!("f{i}"), &buf)?;
        }
    }
    f.sync()?;
    let fcfg = remote(server.1, "files");
    let (_, first) = sync_once(&f, &pf, &fcfg)?;
    let (r, noop) = sync_once(&f, &pf, &fcfg)?;
    println!(
        "sync with nothing to do, {files} files: {:.3} s, {} requests (the first sync of them: {:.1} s)",
        noop, r.requests, first
    );

    // 4. Pull and apply of 1,000 small edits made on another device.
    let (g, pg) = store(t.path(), "other")?;
    sync_once(&g, &pg, &fcfg)?;
    let d0 = g.lookup(InodeId::ROOT, b"d0")?.ino;
    for i in 0..1000u64.min(files) {
        fill(&mut buf, 5_000_000 + i, true);
        put(&g, d0, &format!("f{i}"), &buf)?;
    }
    g.sync()?;
    sync_once(&g, &pg, &fcfg)?;
    let (r, pull) = sync_once(&f, &pf, &fcfg)?;
    println!(
        "pull and apply of {} small edits from another device: {:.2} s ({} updated, {} requests)",
        1000u64.min(files),
        pull,
        r.updated,
        r.requests
    );
    for e in [a, c, f, g, probe.0] {
        e.close()?;
    }
    Ok(())
}
