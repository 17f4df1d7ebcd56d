//! Build script: records the commit the binary is built from, for `portcullis --version` and
//! the start-up log line, as `PORTCULLIS_COMMIT`: the short hash, `-dirty` when tracked files
//! differ from it, or `unknown` outside a git checkout (a source tarball) or without git.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            // Rebuild when HEAD moves (checkout, commit), wherever the git directory is
            // (worktrees keep HEAD and the branch refs in different places).
            for file in ["HEAD", "packed-refs"] {
                rerun_if_git_path_changed(file);
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                rerun_if_git_path_changed(&branch);
            }
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=PORTCULLIS_COMMIT={commit}");
}

/// Trimmed stdout of a successful `git args`; `None` if git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_string())
}

fn rerun_if_git_path_changed(name: &str) {
    if let Some(path) = git(&["rev-parse", "--git-path", name]) {
        let path = PathBuf::from(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
