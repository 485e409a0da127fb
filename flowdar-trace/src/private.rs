//! Files and directories that hold what a trace holds: the trace itself and
//! everything derived from it (exports, datasets, pictures, experiment
//! reports) carry pointers, timings and client addresses of a production
//! server, so each is created readable by its owner only, whatever the
//! umask. Every writer of such a file goes through here.
use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Mode of a new file: the owner reads and writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a new directory: the owner only.
pub const DIR_MODE: u32 = 0o700;

/// Opens `path` for writing as a new file of [`FILE_MODE`], never through a
/// symbolic link. Without `replace`, an existing file is an
/// `AlreadyExists` error. With it, an existing regular file is replaced by
/// a new one (so it does not keep a wider mode), a symbolic link is refused
/// (writing through it would truncate its target), and anything else, a
/// device such as `/dev/null`, is written as it is.
pub fn open(path: &Path, replace: bool) -> std::io::Result<File> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    if !replace {
        return create();
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is a symbolic link, which flowdar does not write through",
        )),
        Ok(m) if m.is_file() => {
            std::fs::remove_file(path)?;
            create()
        }
        Ok(_) => OpenOptions::new().write(true).open(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(),
        Err(e) => Err(e),
    }
}

/// Creates (or replaces) `path` as [`open`] does and writes `contents`.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    open(path, true)?.write_all(contents.as_ref())
}

/// `mkdir -p` whose new directories are [`DIR_MODE`]; existing ones keep
/// their mode (they are the user's).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}
