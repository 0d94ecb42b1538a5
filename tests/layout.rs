//! The layout `src/lib.rs` maps holds: every module imports only from the modules the map lists
//! before it (so there is no import cycle), and no source file outgrows 1,200 lines.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1200;

/// The modules in the order of the map's numbered list in `src/lib.rs` (each backticked name
/// that is a module of the crate, first mention).
fn map_order(lib: &str, modules: &BTreeMap<String, Vec<PathBuf>>) -> Vec<String> {
    let start = lib
        .find("//! The modules, in layers")
        .expect("src/lib.rs maps the modules in layers");
    let mut order: Vec<String> = Vec::new();
    for line in lib[start..].lines().take_while(|l| l.starts_with("//!")) {
        for (i, part) in line.split('`').enumerate() {
            let name = part.trim_end_matches('/');
            if i % 2 == 1 && modules.contains_key(name) && !order.iter().any(|m| m == name) {
                order.push(name.to_string());
            }
        }
    }
    order
}

/// Every top-level module of the crate: `src/<m>.rs` or the files of `src/<m>/`.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("src/ entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() && name != "bin" {
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            modules.insert(name, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            modules.insert(name, vec![path]);
        }
    }
    modules
}

/// The `.rs` files under `dir`, at any depth.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("module folder") {
        let path = entry.expect("module file").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules a file names (`crate::<m>`), outside its tests.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.match_indices("crate::")
        .map(|(i, _)| {
            code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_module_imports_only_from_modules_the_map_lists_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let order = map_order(&lib, &modules);
    let unmapped: Vec<&String> = modules.keys().filter(|m| !order.contains(m)).collect();
    assert!(
        unmapped.is_empty(),
        "modules missing from the map in src/lib.rs: {unmapped:?}"
    );
    let rank = |m: &str| order.iter().position(|o| o == m).unwrap();
    let mut upward = Vec::new();
    for (module, files) in &modules {
        for file in files {
            let text = fs::read_to_string(file).expect("source file");
            for used in imports(&text) {
                if modules.contains_key(&used) && used != *module && rank(&used) > rank(module) {
                    upward.push(format!("{} uses crate::{used}", file.display()));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the map's order ({order:?}):\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_source_file_is_over_the_size_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<PathBuf> = modules(&src).into_values().flatten().collect();
    files.push(src.join("lib.rs"));
    files.push(src.join("main.rs"));
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).expect("source file").lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by concern): {long:?}"
    );
}

#[test]
fn the_import_scan_sees_code_and_docs_but_not_tests() {
    let text = "use crate::conn::Pool;\n/// See [`crate::events`].\nfn f() { crate::verdict::x(); }\n#[cfg(test)]\nmod tests { use crate::check::Checker; }\n";
    assert_eq!(imports(text), ["conn", "events", "verdict"]);
}
