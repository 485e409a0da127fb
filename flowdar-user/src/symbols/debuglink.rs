//! Finding a binary's separate debug file: by build id
//! (`<root>/.build-id/xx/rest.debug`) or by `.gnu_debuglink` (next to the
//! binary, in its `.debug/` folder, or under `<root>/<binary's dir>/`).
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

/// Where distributions install debug files.
pub const DEBUG_ROOT: &str = "/usr/lib/debug";

/// The GNU build id of an ELF file, as lower-case hex.
pub fn build_id<'d, R: object::ReadRef<'d>>(file: &object::File<'d, R>) -> Option<String> {
    let id = file.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The separate debug file for `binary` (whose parsed form is `file`), if
/// one exists under `debug_root`. A debuglink candidate must carry the same
/// CRC the binary names.
pub fn find(binary: &Path, file: &object::File<'_>, debug_root: &Path) -> Option<PathBuf> {
    if let Some(id) = build_id(file).filter(|id| id.len() > 2) {
        let p = debug_root
            .join(".build-id")
            .join(&id[..2])
            .join(format!("{}.debug", &id[2..]));
        if p.is_file() {
            return Some(p);
        }
    }
    let section = file.section_by_name(".gnu_debuglink")?;
    let data = section.data().ok()?;
    let end = data.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&data[..end]).ok()?;
    let crc_at = (end + 4) & !3;
    let crc = u32::from_le_bytes(data.get(crc_at..crc_at + 4)?.try_into().ok()?);
    let dir = binary.parent().unwrap_or(Path::new("/"));
    let under_root = debug_root
        .join(dir.strip_prefix("/").unwrap_or(dir))
        .join(name);
    [dir.join(name), dir.join(".debug").join(name), under_root]
        .into_iter()
        .filter(|p| p != binary && p.is_file())
        .find(|p| std::fs::read(p).is_ok_and(|d| crc32fast::hash(&d) == crc))
}
