//! Snapshot tests of the framework presets, like nixpacks' example snapshots: one small
//! project per preset in `tests/presets/<id>/` (only the files detection reads), planned
//! with default settings, its plan compared with `tests/presets/<id>.plan.json`.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p deploysphere-core --test presets` rewrites the
//! snapshots and the docs table; review the diff by eye before committing it.

use std::path::{Path, PathBuf};

use deploysphere_core::presets::{PRESETS, markdown_table};
use deploysphere_core::{BuildSettings, SourceTree, detect_plan};

/// A fixture folder as the planner sees it. Fixtures are ours, so unlike the builder's
/// tree it does not guard against links that leave the folder.
struct FsTree(PathBuf);

impl SourceTree for FsTree {
    fn exists(&self, path: &str) -> bool {
        self.0.join(path).exists()
    }

    fn read_to_string(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(path)).ok()
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/presets")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|value| value != "0")
}

/// The fixture folders' names, sorted.
fn fixture_ids() -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(fixtures())
        .expect("tests/presets exists")
        .map(|entry| entry.expect("readable entry"))
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn every_fixture_plans_as_its_snapshot() {
    let mut failures = Vec::new();
    for id in fixture_ids() {
        let plan = detect_plan(&FsTree(fixtures().join(&id)), &BuildSettings::default())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        if plan.framework != id {
            failures.push(format!(
                "{id}: detected as `{}`, not as the preset its folder is named after",
                plan.framework
            ));
        }
        let actual = serde_json::to_string_pretty(&plan).unwrap() + "\n";
        let snapshot = fixtures().join(format!("{id}.plan.json"));
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if actual == expected {
            continue;
        }
        if updating() {
            std::fs::write(&snapshot, &actual).unwrap();
        } else {
            failures.push(format!(
                "{id}: the plan differs from {id}.plan.json (- snapshot, + now):\n{}",
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the new plans are right, rerun with UPDATE_SNAPSHOTS=1 and review the diff.",
        failures.join("\n\n")
    );
}

#[test]
fn every_preset_has_a_fixture_and_every_fixture_a_preset() {
    let ids = fixture_ids();
    let missing: Vec<&str> = PRESETS
        .iter()
        .map(|preset| preset.id)
        .filter(|id| !ids.iter().any(|fixture| fixture == id))
        .collect();
    assert!(
        missing.is_empty(),
        "presets without a fixture in tests/presets/: {missing:?}"
    );
    let stray: Vec<&String> = ids
        .iter()
        .filter(|id| !PRESETS.iter().any(|preset| preset.id == id.as_str()))
        .collect();
    assert!(stray.is_empty(), "fixtures of no preset: {stray:?}");
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".plan.json") {
            assert!(
                ids.iter().any(|fixture| fixture == id),
                "{name} has no fixture folder"
            );
        }
    }
}

/// The README's table of presets is the table in the code.
#[test]
fn the_readme_table_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let table = markdown_table();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap_or_default();
    assert!(
        readme.contains(table.as_str()),
        "README.md does not hold the current presets table; paste this into its Builds section:\n{table}"
    );
}

/// A line diff of two short texts (longest common subsequence).
fn diff(old: &str, new: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push(format!("  {}", old[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("- {}", old[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", new[j]));
            j += 1;
        }
    }
    out.join("\n")
}
