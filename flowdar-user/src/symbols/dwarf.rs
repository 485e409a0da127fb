//! DWARF (via gimli): functions with their source file:line and parameter
//! names, static ones included, and which exist only inlined.
use std::{borrow::Cow, collections::HashMap, path::Path};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};

/// A function as DWARF describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DwarfFunction {
    pub name: String,
    /// Link-time address of its out-of-line code (None: only inlined).
    pub address: Option<u64>,
    /// `file:line` of its definition.
    pub source: Option<String>,
    pub params: Vec<String>,
}

/// Functions by name; when several share a name (statics in different
/// files) the first with code wins.
pub type DwarfFunctions = HashMap<String, DwarfFunction>;

/// Reads the DWARF of an ELF file; an empty map when it has none.
pub fn read(file: &object::File<'_>) -> Result<DwarfFunctions, gimli::Error> {
    if file.section_by_name(".debug_info").is_none() {
        return Ok(HashMap::new());
    }
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let mut out: DwarfFunctions = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut tree = unit.entries_tree(None)?;
        let root = tree.root()?;
        walk(&dwarf, &unit, root, &mut out)?;
    }
    Ok(out)
}

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

fn walk<'a>(
    dwarf: &gimli::Dwarf<Reader<'a>>,
    unit: &gimli::Unit<Reader<'a>>,
    node: gimli::EntriesTreeNode<'_, '_, Reader<'a>>,
    out: &mut DwarfFunctions,
) -> gimli::Result<()> {
    let entry = node.entry().clone();
    let mut params = Vec::new();
    let is_function = entry.tag() == gimli::DW_TAG_subprogram;
    let mut children = node.children();
    while let Some(child) = children.next()? {
        if is_function && child.entry().tag() == gimli::DW_TAG_formal_parameter {
            if let Some(name) = name_of(dwarf, unit, child.entry()) {
                params.push(name);
            }
        } else {
            walk(dwarf, unit, child, out)?;
        }
    }
    if !is_function {
        return Ok(());
    }
    let Some(name) = name_of(dwarf, unit, &entry) else {
        return Ok(());
    };
    // A declaration only (e.g. of an external function) describes no code.
    if entry.attr_value(gimli::DW_AT_declaration).is_some() {
        return Ok(());
    }
    let address = match entry.attr_value(gimli::DW_AT_low_pc) {
        Some(v) => dwarf.attr_address(unit, v)?,
        None => None,
    };
    let source = source_of(dwarf, unit, &entry);
    let f = DwarfFunction {
        name: name.clone(),
        address,
        source,
        params,
    };
    match out.get(&name) {
        Some(prev) if prev.address.is_some() || f.address.is_none() => {}
        _ => {
            out.insert(name, f);
        }
    }
    Ok(())
}

fn name_of<'a>(
    dwarf: &gimli::Dwarf<Reader<'a>>,
    unit: &gimli::Unit<Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<Reader<'a>>,
) -> Option<String> {
    let v = entry
        .attr_value(gimli::DW_AT_linkage_name)
        .or_else(|| entry.attr_value(gimli::DW_AT_name))?;
    let s = dwarf.attr_string(unit, v).ok()?;
    Some(s.to_string_lossy().into_owned())
}

fn source_of<'a>(
    dwarf: &gimli::Dwarf<Reader<'a>>,
    unit: &gimli::Unit<Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<Reader<'a>>,
) -> Option<String> {
    let Some(AttributeValue::FileIndex(index)) = entry.attr_value(gimli::DW_AT_decl_file) else {
        return None;
    };
    let line = match entry.attr_value(gimli::DW_AT_decl_line)? {
        AttributeValue::Udata(l) => l,
        AttributeValue::Data1(l) => u64::from(l),
        AttributeValue::Data2(l) => u64::from(l),
        AttributeValue::Data4(l) => u64::from(l),
        _ => return None,
    };
    let program = unit.line_program.as_ref()?;
    let file = program.header().file(index)?;
    let name = dwarf
        .attr_string(unit, file.path_name())
        .ok()?
        .to_string_lossy()
        .into_owned();
    let base = Path::new(&name)
        .file_name()
        .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
    Some(format!("{base}:{line}"))
}
