//! scripts/check-module-cycles sees a circle however its imports are written (issue 27): its own
//! self-test plants one of every form in small crates, and a circle planted in a copy of this
//! crate's own src/ (two files of one folder importing each other through `super::`, the form
//! the old script missed) is found and named.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the checker with `args`; (exit code, stdout).
fn checker(args: &[&Path]) -> (i32, String) {
    let out = Command::new("python3")
        .arg(repo().join("scripts/check-module-cycles"))
        .args(args)
        .output()
        .expect("run python3 scripts/check-module-cycles");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn self_test_finds_every_planted_form() {
    let (code, out) = checker(&[Path::new("--self-test")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("planted circles found"), "{out}");
}

/// Runs the checker on a copy of this crate's src/ with `line` appended to `file` (relative to
/// src/); (exit code, output).
fn checker_with(file: &str, line: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_tree(&repo().join("src"), &src);
    let path = src.join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(line);
    std::fs::write(&path, text).unwrap();
    checker(&[&src])
}

#[test]
fn a_super_circle_planted_in_this_crate_is_found() {
    // route.rs already imports route_info.rs; route_info.rs now imports back, as route_windows.rs
    // once did (through `super::`, which the old checker did not follow).
    let (code, out) = checker_with(
        "hops/route_info.rs",
        "\npub use super::route::HINT_NO_ROUTE;\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("import circle:")
            && l.contains("hops/route.rs")
            && l.contains("hops/route_info.rs")),
        "{out}"
    );
    assert!(out.contains("hops::route_info -> hops::route"), "{out}");
}

#[test]
fn a_use_list_circle_through_a_registry_is_found() {
    // A kind importing the registry that lists it, inside a nested use-list.
    let (code, out) = checker_with(
        "hops/tcp/mod.rs",
        "\n#[allow(unused_imports)]\nuse crate::{hops::{schemes, kind::Kind as _}};\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("hops::tcp -> hops\n"), "{out}");
}
