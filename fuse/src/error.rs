//! Errors of the filesystem layer: the errno vocabulary, the one mapping from engine errors
//! to errno, and the error of a filesystem call.

use cowfs_engine::Error;

/// The errno values this layer answers with (libc's, named here so that the list is the
/// whole vocabulary of the mount).
pub mod errno {
    /// No such file or directory.
    pub const ENOENT: i32 = libc::ENOENT;
    /// I/O error.
    pub const EIO: i32 = libc::EIO;
    /// File exists.
    pub const EEXIST: i32 = libc::EEXIST;
    /// Not a directory.
    pub const ENOTDIR: i32 = libc::ENOTDIR;
    /// Is a directory.
    pub const EISDIR: i32 = libc::EISDIR;
    /// Invalid argument.
    pub const EINVAL: i32 = libc::EINVAL;
    /// No space left on device.
    pub const ENOSPC: i32 = libc::ENOSPC;
    /// Read-only file system.
    pub const EROFS: i32 = libc::EROFS;
    /// File name too long.
    pub const ENAMETOOLONG: i32 = libc::ENAMETOOLONG;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = libc::ENOTEMPTY;
    /// Resource busy.
    pub const EBUSY: i32 = libc::EBUSY;
    /// Operation not permitted.
    pub const EPERM: i32 = libc::EPERM;
    /// Bad file descriptor.
    pub const EBADF: i32 = libc::EBADF;
    /// File too large.
    pub const EFBIG: i32 = libc::EFBIG;
    /// No data available (missing xattr).
    pub const ENODATA: i32 = libc::ENODATA;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;
    /// Inappropriate ioctl for device.
    pub const ENOTTY: i32 = libc::ENOTTY;
    /// Numerical result out of range (xattr buffer too small).
    pub const ERANGE: i32 = libc::ERANGE;
    /// Function not implemented.
    pub const ENOSYS: i32 = libc::ENOSYS;
    /// Cross-device link (copy_file_range out of `.cowfs/`: the caller copies by hand).
    pub const EXDEV: i32 = libc::EXDEV;
}

/// The errno a failed engine call answers with. Exhaustive, without a wildcard arm: a new
/// engine error does not compile until someone decides its errno.
pub fn to_errno(e: &Error) -> i32 {
    use errno::*;
    match e {
        Error::Io { .. } => EIO,
        Error::NoSpace => ENOSPC,
        // A poisoned store refuses writes: the mount behaves as gone read-only.
        Error::Poisoned { .. } => EIO,
        Error::Corrupt { .. } | Error::HashMismatch { .. } | Error::Lower { .. } => EIO,
        // A bug; the engine is poisoned by it.
        Error::Internal(_) => EIO,
        Error::NotAStore { .. } | Error::UnsupportedFormat { .. } => EIO,
        Error::Locked => EBUSY,
        Error::NotFound(_) => ENOENT,
        Error::NoXattr(_) => ENODATA,
        Error::Exists(_) => EEXIST,
        Error::NotDir(_) => ENOTDIR,
        Error::IsDir(_) => EISDIR,
        Error::NotEmpty(_) => ENOTEMPTY,
        Error::Invalid(_) | Error::Loop => EINVAL,
        Error::NameTooLong(_) => ENAMETOOLONG,
        Error::Closed => EROFS,
    }
}

/// A failed filesystem call: an engine error, or an errno decided here.
#[derive(Debug)]
pub enum FsError {
    /// The engine refused or failed.
    Engine(Error),
    /// A POSIX rule of this layer (EPERM, EOPNOTSUPP, EBADF, ...).
    Errno(i32),
}

impl From<Error> for FsError {
    fn from(e: Error) -> Self {
        FsError::Engine(e)
    }
}

impl FsError {
    /// The errno to answer with.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Engine(e) => to_errno(e),
            FsError::Errno(n) => *n,
        }
    }
}

/// Result of a filesystem call.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use cowfs_engine::InodeId;
    use cowfs_engine::error::Missing;

    #[test]
    fn engine_errors_map_to_the_documented_errno() {
        assert_eq!(to_errno(&Error::NotFound(Missing::Inode(InodeId(3)))), errno::ENOENT);
        assert_eq!(to_errno(&Error::Internal("x".into())), errno::EIO);
        assert_eq!(to_errno(&Error::NotEmpty(InodeId(3))), errno::ENOTEMPTY);
        assert_eq!(to_errno(&Error::NoSpace), errno::ENOSPC);
        assert_eq!(to_errno(&Error::NameTooLong(300)), errno::ENAMETOOLONG);
        assert_eq!(to_errno(&Error::Poisoned { cause: "x".into() }), errno::EIO);
    }
}
