//! Extended attributes: `user.*` for everyone, `security.*` and `trusted.*` for root.

use cowfs_engine::{InodeId, XattrMode};

use super::{Caller, CowFs, XATTR_CREATE, XATTR_REPLACE};
use crate::error::{FsError, Result, errno};
use crate::virt::is_virtual;

impl CowFs {
    fn check_xattr_access(c: Caller, name: &[u8]) -> Result<()> {
        if name.starts_with(b"user.") {
            return Ok(());
        }
        if name.starts_with(b"security.") || name.starts_with(b"trusted.") {
            return if c.uid == 0 { Ok(()) } else { Err(FsError::Errno(errno::EPERM)) };
        }
        Err(FsError::Errno(errno::EOPNOTSUPP))
    }

    /// setxattr with XATTR_CREATE / XATTR_REPLACE.
    pub fn setxattr(&self, c: Caller, ino: InodeId, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        if is_virtual(ino) {
            return Err(FsError::Errno(errno::EROFS));
        }
        Self::check_xattr_access(c, name)?;
        let mode = match flags {
            0 => XattrMode::Any,
            XATTR_CREATE => XattrMode::Create,
            XATTR_REPLACE => XattrMode::Replace,
            _ => return Err(FsError::Errno(errno::EINVAL)),
        };
        Ok(self.engine.set_xattr(ino, name, value, mode)?)
    }

    /// An xattr's value.
    pub fn getxattr(&self, ino: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        let i = self.getattr(ino)?;
        i.xattrs.get(name).cloned().ok_or(FsError::Errno(errno::ENODATA))
    }

    /// All xattr names, NUL-terminated, concatenated.
    pub fn listxattr(&self, ino: InodeId) -> Result<Vec<u8>> {
        let i = self.getattr(ino)?;
        let mut out = Vec::new();
        for k in i.xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// Removes an xattr.
    pub fn removexattr(&self, c: Caller, ino: InodeId, name: &[u8]) -> Result<()> {
        if is_virtual(ino) {
            return Err(FsError::Errno(errno::EROFS));
        }
        Self::check_xattr_access(c, name)?;
        Ok(self.engine.remove_xattr(ino, name)?)
    }
}
