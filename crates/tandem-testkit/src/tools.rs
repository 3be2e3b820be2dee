//! External tools a test drives (promtool, prometheus, redis-cli, a Python
//! with redis-py): found on `PATH`, and skipped with a notice when missing,
//! except under CI (`CI` set to anything but empty, `0` or `false`), where
//! a missing tool fails the test: `.ci/run` installs every one of them.

use std::path::PathBuf;

/// True when running under CI.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// An executable on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The tool, or `None` after printing why the test is skipped; under CI a
/// missing tool fails the test. `package` says where it comes from.
pub fn require(name: &str, package: &str) -> Option<PathBuf> {
    let found = find(name);
    if found.is_none() {
        assert!(!in_ci(), "`{name}` is required under CI: install {package} (.ci/run does)");
        eprintln!("NOTICE: `{name}` not found; skipping this test (install {package}; with CI=true it fails instead)");
    }
    found
}

/// The Python that has redis-py (`TANDEM_PYTHON`, else `python3`), or
/// `None` when it lacks the module (skipped; a failure under CI).
pub fn python_with_redis() -> Option<String> {
    let python = std::env::var("TANDEM_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !in_ci(),
            "{python} has no `redis` module (.ci/run makes a virtual environment with it)"
        );
        eprintln!("NOTICE: {python} has no `redis` module; skipping this test");
        return None;
    }
    Some(python)
}
