//! Where vt keeps its data by default: one per-user directory, the same from every working
//! directory, as kind and k3d do — `$XDG_DATA_HOME/vt`, else `~/.local/share/vt`.

use std::path::{Path, PathBuf};

/// The default data directory of `vt server` and of the tenant commands.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(std::env::var_os("XDG_DATA_HOME").map(PathBuf::from), std::env::var_os("HOME").map(PathBuf::from))
}

/// The rule, on given environment values: the XDG base directory specification ignores a
/// relative `XDG_DATA_HOME`; without a home either, the working directory's `vt-data` is the
/// last resort.
fn data_dir_from(xdg_data_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if let Some(x) = xdg_data_home.filter(|p| p.is_absolute()) {
        return x.join("vt");
    }
    match home.filter(|h| !h.as_os_str().is_empty()) {
        Some(h) => h.join(".local").join("share").join("vt"),
        None => PathBuf::from("vt-data"),
    }
}

/// The kubeconfig of the embedded host (what the CLI uses by default).
pub fn embedded_host_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir.join("host").join("admin.kubeconfig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_data_home_wins_when_absolute() {
        let d = data_dir_from(Some("/data".into()), Some("/home/u".into()));
        assert_eq!(d, PathBuf::from("/data/vt"));
        // A relative XDG_DATA_HOME is invalid per the XDG spec and ignored.
        let d = data_dir_from(Some("rel".into()), Some("/home/u".into()));
        assert_eq!(d, PathBuf::from("/home/u/.local/share/vt"));
    }

    #[test]
    fn home_then_working_directory() {
        assert_eq!(data_dir_from(None, Some("/home/u".into())), PathBuf::from("/home/u/.local/share/vt"));
        assert_eq!(data_dir_from(None, Some("".into())), PathBuf::from("vt-data"));
        assert_eq!(data_dir_from(None, None), PathBuf::from("vt-data"));
    }
}
