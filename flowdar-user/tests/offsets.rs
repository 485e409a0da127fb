//! The client-address offsets the kernel side reads through
//! (`flowdar_common::CONN_CLIENT_ADDR_OFF`, `SOCKADDR_SA_OFF`) and those of
//! an HTTP/2 stream's primary connection (`REQUEST_CONNECTION_OFF`,
//! `CONN_MASTER_OFF`), checked
//! against the DWARF of a program built here with `gcc -g` against
//! Debian's own httpd and APR headers (apache2-dev, libapr1-dev: `cargo
//! xtask setup` installs them). The traced binaries are stripped, so their
//! layout can only be checked through the headers they were built from.
use std::{path::Path, process::Command};

use flowdar_common::{
    CONN_CLIENT_ADDR_OFF, CONN_MASTER_OFF, REQUEST_CONNECTION_OFF, SOCKADDR_SA_OFF,
};
use gimli::{EndianSlice, RunTimeEndian};
use object::{Object as _, ObjectSection as _};

/// Where Debian puts the headers, and the package that installs each.
const INCLUDES: [(&str, &str, &str); 2] = [
    ("/usr/include/apache2", "httpd.h", "apache2-dev"),
    ("/usr/include/apr-1.0", "apr_network_io.h", "libapr1-dev"),
];

/// Globals of both types, so that gcc describes their layout in full.
const PROGRAM: &str = "#include <httpd.h>\n\
    #include <apr_network_io.h>\n\
    conn_rec c;\n\
    request_rec r;\n\
    apr_sockaddr_t a;\n\
    int main(void) { return 0; }\n";

/// Builds [`PROGRAM`] with debug information into `dir`; returns the binary.
fn build_with_dwarf(dir: &Path) -> std::path::PathBuf {
    for (include, header, package) in INCLUDES {
        assert!(
            Path::new(include).join(header).is_file(),
            "{include}/{header} is missing: install {package} (cargo xtask setup does)"
        );
    }
    let (source, binary) = (dir.join("layout.c"), dir.join("layout"));
    std::fs::write(&source, PROGRAM).unwrap();
    let out = Command::new("gcc")
        .args(["-g", "-O0", "-o"])
        .arg(&binary)
        .args(INCLUDES.map(|(include, _, _)| format!("-I{include}")))
        .arg(&source)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed on Debian's headers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// `DW_AT_data_member_location` of `member` in the definition of
/// `struct name`, or None when the DWARF has no such member.
fn member_offset(dwarf: &gimli::Dwarf<Reader<'_>>, name: &str, member: &str) -> Option<u64> {
    let named = |unit: &gimli::Unit<Reader<'_>>,
                 e: &gimli::DebuggingInformationEntry<Reader<'_>>| {
        e.attr_value(gimli::DW_AT_name)
            .and_then(|v| dwarf.attr_string(unit, v).ok())
            .is_some_and(|s| s.slice() == name.as_bytes())
    };
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let mut entries = unit.entries();
        while let Some(e) = entries.next_dfs().unwrap() {
            let definition = e.tag() == gimli::DW_TAG_structure_type
                && e.attr_value(gimli::DW_AT_declaration).is_none()
                && named(&unit, e);
            if !definition {
                continue;
            }
            let mut tree = unit.entries_tree(Some(e.offset())).unwrap();
            let mut members = tree.root().unwrap().children();
            while let Some(m) = members.next().unwrap() {
                let m = m.entry();
                let is_it = m.tag() == gimli::DW_TAG_member
                    && m.attr_value(gimli::DW_AT_name)
                        .and_then(|v| dwarf.attr_string(&unit, v).ok())
                        .is_some_and(|s| s.slice() == member.as_bytes());
                if is_it {
                    return m
                        .attr_value(gimli::DW_AT_data_member_location)?
                        .udata_value();
                }
            }
        }
    }
    None
}

#[test]
fn client_address_offsets_match_the_dwarf_of_debians_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(build_with_dwarf(dir.path())).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<Reader<'_>> {
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or_default();
        Ok(EndianSlice::new(bytes, RunTimeEndian::Little))
    })
    .unwrap();
    for (name, member, constant) in [
        ("conn_rec", "client_addr", CONN_CLIENT_ADDR_OFF),
        ("apr_sockaddr_t", "sa", SOCKADDR_SA_OFF),
        // HTTP/2 streams: r->connection->master.
        ("request_rec", "connection", REQUEST_CONNECTION_OFF),
        ("conn_rec", "master", CONN_MASTER_OFF),
    ] {
        let offset = member_offset(&dwarf, name, member)
            .unwrap_or_else(|| panic!("no member {member} of struct {name} in the DWARF"));
        assert_eq!(
            offset, constant,
            "struct {name}.{member} is at {offset} in Debian's headers, flowdar-common says {constant}"
        );
    }
}
