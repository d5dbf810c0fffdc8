//! Version and build information, reported by `regent version`, `GET /`, provenance and metrics.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Set by the build environment when known (e.g. `REGENT_BUILD_COMMIT=$(git rev-parse HEAD)`).
pub const COMMIT: &str = match option_env!("REGENT_BUILD_COMMIT") {
    Some(c) => c,
    None => "",
};
pub const TIMESTAMP: &str = match option_env!("REGENT_BUILD_TIMESTAMP") {
    Some(t) => t,
    None => "",
};
pub const HOSTNAME: &str = match option_env!("REGENT_BUILD_HOSTNAME") {
    Some(h) => h,
    None => "",
};

/// The text `regent version` prints.
pub fn describe() -> String {
    format!(
        "Version: {VERSION}\nBuild Commit: {COMMIT}\nBuild Timestamp: {TIMESTAMP}\n\
         Build Hostname: {HOSTNAME}\nRego Engine: regorus\nPlatform: {}/{}\n",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
