//! Finding the file a probe request's target names in a live process: by
//! path, by file name, or (with a probe file's `[[target]]` rule) by the
//! function it defines, so Apache is found whatever its build calls it.
use super::{MappedFile, ProbeRequest, ProcMaps};
use crate::symbols::ElfSymbols;

/// A request's target found in the process, and why that file.
#[derive(Debug, Clone)]
pub struct Located<'m> {
    pub file: &'m MappedFile,
    /// "path", "file name", or "defines ap_read_request".
    pub why: String,
}

/// The mapped file a request's target names: a path the process maps, a
/// file whose name is the short name (`apache2`, `libapr-1` for
/// `libapr-1.so.0`), or, when no file has that name, the mapped file that
/// defines the request's identifying function (the server binary called
/// `httpd`, APR linked statically into it): targets are matched by what
/// they are, not by Debian's file names. `Err` lists the candidates seen.
pub fn locate<'m>(
    maps: &'m ProcMaps,
    req: &ProbeRequest,
) -> Result<Located<'m>, Vec<&'m MappedFile>> {
    let by_name = maps.find(&req.target);
    let why = if req.target.contains('/') {
        "path"
    } else {
        "file name"
    };
    let candidates = match by_name {
        Ok(file) => {
            return Ok(Located {
                file,
                why: why.into(),
            })
        }
        Err(c) if req.target.contains('/') => return Err(c),
        Err(c) => c,
    };
    let Some(function) = req.identifying_function() else {
        return Err(candidates);
    };
    // Among same-named files (ambiguous), or else all: the main executable
    // first, then libraries in map order.
    let pool: Vec<&MappedFile> = if candidates.is_empty() {
        maps.files.iter().collect()
    } else {
        candidates.clone()
    };
    pool.into_iter()
        .find(|f| ElfSymbols::defines(&f.host_path, function))
        .map(|file| Located {
            file,
            why: format!("defines {function}"),
        })
        .ok_or(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_maps() -> ProcMaps {
        ProcMaps::read(std::process::id()).unwrap()
    }

    #[test]
    fn a_target_without_its_name_is_found_by_what_it_defines() {
        let maps = own_maps();
        let mut req = ProbeRequest::new("apache2", "flowdar_feature_probe_target");
        // No rule: a name that matches no file is not mapped, whatever
        // some file defines.
        assert!(locate(&maps, &req).is_err());
        // With a `[[target]]` rule: the file that defines the function.
        req.defines = Some("flowdar_feature_probe_target".into());
        let found = locate(&maps, &req).unwrap();
        assert_eq!(found.file.path, std::env::current_exe().unwrap());
        assert_eq!(found.why, "defines flowdar_feature_probe_target");
        // Nothing defines this one: still not mapped.
        req.defines = Some("no_such_function_anywhere".into());
        assert!(locate(&maps, &req).is_err());
    }

    #[test]
    fn names_still_win_over_rules() {
        let maps = own_maps();
        let libc = maps
            .files
            .iter()
            .find(|f| f.path.to_string_lossy().contains("libc.so"))
            .expect("the test binary maps libc");
        let mut req = ProbeRequest::new("libc", "malloc");
        req.defines = Some("flowdar_feature_probe_target".into());
        let found = locate(&maps, &req).unwrap();
        assert_eq!(found.file.path, libc.path);
        assert_eq!(found.why, "file name");
    }
}
