//! Mount options: what `cowfs mount -o` and mount(8) (through `mount.fuse.cowfs`, from a
//! command line or `/etc/fstab`) give, checked once, turned into the kernel's mount flags.

use std::path::PathBuf;

use anyhow::{Result, bail};
use nix::mount::MsFlags;
use nix::sys::statvfs::FsFlags;

/// The options of one mount. A flag left `None` was not given: a new mount takes its default,
/// a remount keeps what the mount has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `ro` / `rw`.
    pub read_only: Option<bool>,
    /// `nosuid` / `suid`.
    pub nosuid: Option<bool>,
    /// `nodev` / `dev`.
    pub nodev: Option<bool>,
    /// `noexec` / `exec`.
    pub noexec: Option<bool>,
    /// `noatime` / `relatime` (or `atime`) / `strictatime`.
    pub atime: Option<Atime>,
    /// `nodiratime` / `diratime`.
    pub nodiratime: Option<bool>,
    /// `allow_other`: other users may use the mount (always so when root mounts).
    pub allow_other: bool,
    /// `remount`: change the flags of the live mount.
    pub remount: bool,
    /// `lower=DIR[:DIR...]`: lower trees, as `--lower`.
    pub lowers: Vec<PathBuf>,
    /// Options the kernel shows for a FUSE mount (`user_id=0`, ...), which mount(8) passes
    /// back on a remount: cowfs sets them, so they are refused when mounting.
    pub kernel_set: Vec<String>,
}

/// When reads change access times (the kernel's mount flag; the daemon records them, see
/// `cowfs_fuse::MountFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atime {
    /// Never.
    No,
    /// When the access time is not after the modification or change time, or a day old (the
    /// default).
    Relative,
    /// At every read the daemon sees.
    Strict,
}

/// Options for mount(8) and fstab themselves, which the filesystem does not see.
fn for_mount_8(opt: &str) -> bool {
    matches!(
        opt,
        "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users" | "nouser" | "owner" | "group"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

impl MountOptions {
    /// Parses comma-separated lists (each `-o` given); an unknown option is refused, named.
    pub fn parse<S: AsRef<str>>(lists: &[S]) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for opt in lists.iter().flat_map(|l| l.as_ref().split(',')).filter(|s| !s.is_empty()) {
            match opt {
                "ro" | "rw" => o.read_only = Some(opt == "ro"),
                "nosuid" | "suid" => o.nosuid = Some(opt == "nosuid"),
                "nodev" | "dev" => o.nodev = Some(opt == "nodev"),
                "noexec" | "exec" => o.noexec = Some(opt == "noexec"),
                "allow_other" => o.allow_other = true,
                "remount" => o.remount = true,
                "noatime" => o.atime = Some(Atime::No),
                "relatime" | "atime" => o.atime = Some(Atime::Relative),
                "strictatime" => o.atime = Some(Atime::Strict),
                "nodiratime" | "diratime" => o.nodiratime = Some(opt == "nodiratime"),
                // What cowfs always does: the kernel checks permissions against the modes;
                // access times are written with the next durable operation.
                "default_permissions" | "lazytime" => {}
                _ if for_mount_8(opt) => {}
                _ if ["user_id=", "group_id=", "rootmode=", "max_read=", "blksize=", "fd="]
                    .iter()
                    .any(|k| opt.starts_with(k)) =>
                {
                    o.kernel_set.push(opt.to_string())
                }
                _ => match opt.strip_prefix("lower=") {
                    Some("") => bail!("mount option lower= names no directory"),
                    Some(dirs) => o.lowers.extend(dirs.split(':').map(PathBuf::from)),
                    None => bail!("unknown mount option {opt:?}"),
                },
            }
        }
        if let Some(k) = o.kernel_set.first()
            && !o.remount
        {
            bail!("mount option {k}: cowfs sets it itself");
        }
        Ok(o)
    }

    /// The kernel's flags for a new mount (root's defaults: suid and dev, as a system
    /// filesystem; an unprivileged mount is always nosuid,nodev).
    pub fn flags(&self) -> MsFlags {
        self.flags_over(MsFlags::MS_RELATIME)
    }

    /// The flags to remount with: those of the mount now (`now`, from statvfs), changed by the
    /// options given.
    pub fn remount_flags(&self, now: FsFlags) -> MsFlags {
        let mut keep = MsFlags::MS_REMOUNT;
        for (st, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        ] {
            keep.set(ms, now.contains(st));
        }
        self.flags_over(keep)
    }

    fn flags_over(&self, mut flags: MsFlags) -> MsFlags {
        for (given, ms) in [
            (self.read_only, MsFlags::MS_RDONLY),
            (self.nosuid, MsFlags::MS_NOSUID),
            (self.nodev, MsFlags::MS_NODEV),
            (self.noexec, MsFlags::MS_NOEXEC),
            (self.nodiratime, MsFlags::MS_NODIRATIME),
        ] {
            if let Some(on) = given {
                flags.set(ms, on);
            }
        }
        if let Some(a) = self.atime {
            flags.remove(MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME);
            flags.insert(match a {
                Atime::No => MsFlags::MS_NOATIME,
                Atime::Relative => MsFlags::MS_RELATIME,
                Atime::Strict => MsFlags::MS_STRICTATIME,
            });
        }
        flags
    }

    /// The options as one `-o` argument that [`MountOptions::parse`] reads back the same
    /// (for the daemon); `lowers` are passed as `--lower`.
    pub fn to_arg(&self) -> String {
        let mut out = Vec::new();
        for (given, on, off) in [
            (self.read_only, "ro", "rw"),
            (self.nosuid, "nosuid", "suid"),
            (self.nodev, "nodev", "dev"),
            (self.noexec, "noexec", "exec"),
            (self.nodiratime, "nodiratime", "diratime"),
        ] {
            if let Some(v) = given {
                out.push(if v { on } else { off });
            }
        }
        if let Some(a) = self.atime {
            out.push(match a {
                Atime::No => "noatime",
                Atime::Relative => "relatime",
                Atime::Strict => "strictatime",
            });
        }
        if self.allow_other {
            out.push("allow_other");
        }
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_round_trip() {
        let o = MountOptions::parse(&["rw,noexec,defaults", "nosuid,x-systemd.automount,lower=/a:/b", "ro"]).unwrap();
        assert_eq!(o.read_only, Some(true), "the last of ro/rw wins");
        assert_eq!((o.noexec, o.nosuid, o.nodev), (Some(true), Some(true), None));
        assert_eq!(o.lowers, [PathBuf::from("/a"), PathBuf::from("/b")]);
        let back = MountOptions::parse(&[o.to_arg()]).unwrap();
        assert_eq!(back, MountOptions { lowers: Vec::new(), ..o.clone() });
        // What mount(8) passes on a remount: the kernel's options of the live mount.
        let r = MountOptions::parse(&["ro,noatime,remount,user_id=0,group_id=0,default_permissions,allow_other"]);
        assert!(r.unwrap().remount);
        assert!(
            o.flags().contains(MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME)
        );
        let a = MountOptions::parse(&["strictatime,nodiratime,noatime"]).unwrap();
        assert_eq!((a.atime, a.nodiratime), (Some(Atime::No), Some(true)), "the last of the atime family wins");
        assert!(
            a.flags().contains(MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME)
                && !a.flags().contains(MsFlags::MS_RELATIME)
        );
        assert_eq!(MountOptions::parse(&[a.to_arg()]).unwrap(), a);
        assert!(!o.flags().contains(MsFlags::MS_NODEV));
    }

    #[test]
    fn a_remount_keeps_what_is_not_given() {
        let o = MountOptions::parse(&["remount,ro"]).unwrap();
        let f = o.remount_flags(FsFlags::ST_NOSUID | FsFlags::ST_NOEXEC);
        assert!(f.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        assert!(!f.contains(MsFlags::MS_NODEV));
        let rw = MountOptions::parse(&["remount,rw"]).unwrap().remount_flags(FsFlags::ST_RDONLY | FsFlags::ST_NOATIME);
        assert!(!rw.contains(MsFlags::MS_RDONLY) && rw.contains(MsFlags::MS_NOATIME), "noatime kept");
        let strict = MountOptions::parse(&["remount,strictatime"]).unwrap().remount_flags(FsFlags::ST_NOATIME);
        assert!(strict.contains(MsFlags::MS_STRICTATIME) && !strict.contains(MsFlags::MS_NOATIME));
    }

    #[test]
    fn bad_options_are_named() {
        for (bad, want) in [
            ("rw,colour=blue", "unknown mount option \"colour=blue\""),
            ("lower=", "lower= names no directory"),
            ("user_id=0", "cowfs sets it itself"),
        ] {
            let e = MountOptions::parse(&[bad]).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
