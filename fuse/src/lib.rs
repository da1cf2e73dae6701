//! cowfs-fuse: filesystem semantics over the engine ([`fs::CowFs`], testable without a
//! mount) and the thin fuser adapter ([`adapter::FuseAdapter`]), plus the one mapping from
//! engine errors to errno.

pub mod adapter;
pub mod fs;
pub mod virt;

use cowfs_engine::Error;

/// errno values used by the mapping (Linux).
pub mod errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Read-only file system.
    pub const EROFS: i32 = 30;
    /// File name too long.
    pub const ENAMETOOLONG: i32 = 36;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = 39;
    /// Resource busy.
    pub const EBUSY: i32 = 16;
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// File too large.
    pub const EFBIG: i32 = 27;
    /// No data available (missing xattr).
    pub const ENODATA: i32 = 61;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Inappropriate ioctl for device.
    pub const ENOTTY: i32 = 25;
    /// Numerical result out of range (xattr buffer too small).
    pub const ERANGE: i32 = 34;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// Cross-device link (copy_file_range out of `.cowfs/`: the caller copies by hand).
    pub const EXDEV: i32 = 18;
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
        Error::Corrupt { .. } | Error::HashMismatch { .. } => EIO,
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

#[cfg(test)]
mod tests {
    use super::*;
    use cowfs_engine::InodeId;

    #[test]
    fn engine_errors_map_to_the_documented_errno() {
        assert_eq!(to_errno(&Error::NotFound("x".into())), errno::ENOENT);
        assert_eq!(to_errno(&Error::NotEmpty(InodeId(3))), errno::ENOTEMPTY);
        assert_eq!(to_errno(&Error::NoSpace), errno::ENOSPC);
        assert_eq!(to_errno(&Error::NameTooLong(300)), errno::ENAMETOOLONG);
        assert_eq!(to_errno(&Error::Poisoned { cause: "x".into() }), errno::EIO);
    }
}
